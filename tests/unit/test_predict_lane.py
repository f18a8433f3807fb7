"""Which paths the prediction lane answers (app/predict_lane.py): exactly the four prediction routes, with their
path parameters as Starlette's `{name}` would match them; every other path goes on to Starlette."""

from __future__ import annotations

import pytest
from starlette.routing import Match, Route

from app.predict_lane import TEMPLATES, V1_DEFAULT, V1_NAMED, V2_INFER, V2_VERSIONED, match


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/predict", (V1_DEFAULT, None, None)),
        ("/v1/models/savings/predict", (V1_NAMED, "savings", None)),
        ("/v1/models/a.b-c_d/predict", (V1_NAMED, "a.b-c_d", None)),
        ("/v2/models/savings/infer", (V2_INFER, "savings", None)),
        ("/v2/models/savings/versions/3/infer", (V2_VERSIONED, "savings", "3")),
        ("/v1/predict/", None),
        ("/v1/models//predict", None),
        ("/v1/models/a/b/predict", None),
        ("/v2/models/savings/versions//infer", None),
        ("/v2/models/savings/versions/3/infer/", None),
        ("/v1/models/savings", None),
        ("/v2/models/savings/ready", None),
        ("/v3/models/savings/infer", None),
        ("//v1/predict", None),
        ("/healthz", None),
    ],
)
def test_match_takes_the_prediction_paths_only(path: str, expected: tuple[str, str | None, str | None] | None) -> None:
    assert match(path) == expected


@pytest.mark.parametrize(
    "path",
    ["/v1/predict", "/v1/models/m/predict", "/v2/models/m/infer", "/v2/models/m/versions/7/infer", "/v1/models/m",
     "/v1/models//predict", "/v1/models/a/b/predict", "/v2/models/m/versions/7/infer/", "/x/v1/predict"],
)  # fmt: skip
def test_match_agrees_with_starlettes_routes(path: str) -> None:
    """The lane takes a path exactly when one of the templates, as a Starlette route, would."""
    scope = {"type": "http", "path": path, "root_path": "", "method": "POST"}
    starlette = [t for t in TEMPLATES if Route(t, lambda r: None, methods=["POST"]).matches(scope)[0] is Match.FULL]
    found = match(path)
    assert (found[0] if found else None) == (starlette[0] if starlette else None)
