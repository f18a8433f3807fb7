"""A small HTTP client of the prediction API (docs/serving.md): short timeouts, one error type per outcome.

Every model is asked for by name: `GET /v1/models/<name>`, `POST /v1/models/<name>/predict`. For the default
model an API that does not know those paths yet (404) is asked on `/v1/model` and `/v1/predict`, which
stay the default model's, so a UI rolled out before the API still works with one model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

# The UI waits on a person: fail fast when the API is away rather than hang the page.
TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class ApiError(Exception):
    """The API answered with an error (`{"error": ...}`); `detail` holds the rest (instance, field, ...)."""

    def __init__(self, message: str, status: int | None = None, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail or {}


class ApiUnavailable(ApiError):
    """The API is unreachable, too slow, or up but not ready (no model loaded yet)."""


@dataclass(frozen=True)
class ServedModel:
    """What `GET /v1/models/<name>` reports: the version a replica serves and its manifest."""

    name: str
    version: int
    manifest: dict[str, Any]
    loaded_at: str = ""
    source: str = ""


@dataclass(frozen=True)
class Prediction:
    """One prediction and the model version that computed it."""

    model: str
    version: int
    value: Any
    probabilities: dict[str, float] | None = None
    request: dict[str, Any] = field(default_factory=dict)


class ApiClient:
    """Talks to one API base URL. Thread-safe (httpx.Client), so one instance serves every session.

    `default_model` is the model `/v1/model` and `/v1/predict` serve (FLYWHEEL_MODEL_NAME).
    """

    def __init__(
        self, base_url: str, *, default_model: str = "", timeout: httpx.Timeout = TIMEOUT, transport: Any = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.default_model = default_model
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[str]:
        """`GET /v1/models`: the names of the models the API serves."""
        listed = self._call("GET", "/v1/models").get("models") or []
        names = [m if isinstance(m, str) else m.get("name") or m.get("model") for m in listed]
        return sorted({str(n) for n in names if n})

    def served_model(self, name: str = "") -> ServedModel:
        """`GET /v1/models/<name>` (the default model when no name); ApiUnavailable when down or not loaded yet."""
        body = self._per_model(name, "GET", "", "/v1/model")
        return ServedModel(
            name=str(body["model"]),
            version=int(body["version"]),
            manifest=dict(body.get("manifest") or {}),
            loaded_at=str(body.get("loaded_at") or ""),
            source=str(body.get("source") or ""),
        )

    def predict(self, instance: dict[str, Any], name: str = "") -> Prediction:
        """`POST /v1/models/<name>/predict` with one instance; raises ApiError naming the field the API rejected."""
        body = self._per_model(name, "POST", "/predict", "/v1/predict", json={"instances": [instance]})
        probabilities = body.get("probabilities")
        return Prediction(
            model=str(body["model"]),
            version=int(body["model_version"]),
            value=body["predictions"][0],
            probabilities=probabilities[0] if probabilities else None,
            request=instance,
        )

    def _per_model(self, name: str, method: str, suffix: str, default_path: str, **kwargs: Any) -> dict[str, Any]:
        """Call the model's own path; for the default model, the default path when the API lacks the former."""
        name = name or self.default_model
        if not name:
            return self._call(method, default_path, **kwargs)
        try:
            return self._call(method, f"/v1/models/{quote(name, safe='')}{suffix}", **kwargs)
        except ApiError as e:
            if e.status != 404:
                raise
            if name != self.default_model:
                raise ApiError(f"the prediction API does not serve model {name!r} ({e.message})", 404, e.detail) from e
        body = self._call(method, default_path, **kwargs)
        if body.get("model") != name:
            raise ApiError(f"the prediction API serves {body.get('model')!r} at {default_path}, not {name!r}", 404)
        return body

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise ApiUnavailable(f"the prediction API at {self.base_url} did not answer in time ({url})") from e
        except httpx.TransportError as e:
            raise ApiUnavailable(f"the prediction API at {self.base_url} is not reachable ({e})") from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(
                f"{method} {url} answered {response.status_code} with a non-JSON body: {response.text[:200]!r}",
                response.status_code,
            )
        if response.status_code == 503:
            reason = body.get("error") or body.get("reason") or "not ready"
            raise ApiUnavailable(f"the prediction API is not ready: {reason}", 503, body)
        if response.is_error:
            detail = {k: v for k, v in body.items() if k != "error"}
            raise ApiError(str(body.get("error") or f"HTTP {response.status_code}"), response.status_code, detail)
        return body
