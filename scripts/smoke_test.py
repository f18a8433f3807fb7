"""Smoke-test a deployed Flywheel through its public URLs (the deploy workflow runs this after a rollout).

    python scripts/smoke_test.py --api http://<api-lb>:8080 --ui http://<ui-lb> [--timeout 600]

Waits for the load balancers to answer (new DNS names take minutes), then: the API is ready with a model,
predicts a few rows of the schema's demo data, exposes its metrics; the UI answers its health check.
Exits non-zero with the reason on the first failed check. Without --api only the UI is checked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

RETRY_SECONDS = 5


class SmokeTestError(Exception):
    """A check failed; the message says which and what came back."""


def wait_for(what: str, check: Callable[[], httpx.Response], timeout: float) -> httpx.Response:
    """Retry `check` until it returns a 200, or raise with the last answer once `timeout` has passed."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            resp = check()
            if resp.status_code == 200:
                return resp
            last = f"HTTP {resp.status_code}: {resp.text[:200]}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            raise SmokeTestError(f"{what}: not OK after {timeout:.0f}s ({last})")
        time.sleep(RETRY_SECONDS)


def demo_instances(schema: str, rows: int) -> list[dict[str, Any]]:
    """A few valid request rows from the demo data generator of the built-in schema."""
    from flywheel.sampledata import GENERATORS
    from flywheel.schema import load_schema

    features = load_schema(schema).feature_names
    frame = GENERATORS[schema](rows, seed=20)[features]
    return json.loads(frame.to_json(orient="records"))


def check_api(client: httpx.Client, api: str, schema: str, timeout: float) -> str:
    ready = wait_for("API /readyz", lambda: client.get(f"{api}/readyz"), timeout).json()
    version = ready.get("model_version")
    instances = demo_instances(schema, 3)
    resp = client.post(f"{api}/v1/predict", json={"instances": instances})
    if resp.status_code != 200:
        raise SmokeTestError(f"POST /v1/predict: HTTP {resp.status_code}: {resp.text[:300]}")
    predictions = resp.json().get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        raise SmokeTestError(f"POST /v1/predict: expected {len(instances)} predictions, got {resp.text[:300]}")
    model = client.get(f"{api}/v1/model")
    if model.status_code != 200:
        raise SmokeTestError(f"GET /v1/model: HTTP {model.status_code}")
    metrics = client.get(f"{api}/metrics")
    if metrics.status_code != 200 or "flywheel_model_ready" not in metrics.text:
        raise SmokeTestError(f"GET /metrics: HTTP {metrics.status_code}, flywheel_model_ready missing")
    return f"API ready with model version {version}; predicted {len(predictions)} rows; metrics exported"


def check_ui(client: httpx.Client, ui: str, timeout: float) -> str:
    wait_for("UI /_stcore/health", lambda: client.get(f"{ui}/_stcore/health"), timeout)
    page = client.get(f"{ui}/")
    if page.status_code != 200:
        raise SmokeTestError(f"UI /: HTTP {page.status_code}")
    return "UI healthy"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", help="base URL of the prediction API")
    parser.add_argument("--ui", help="base URL of the Streamlit UI")
    parser.add_argument("--schema", default="savings", help="built-in schema of the served model")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each endpoint")
    args = parser.parse_args(argv)
    if not (args.api or args.ui):
        parser.error("give --api, --ui or both")
    try:
        with httpx.Client(timeout=10, follow_redirects=True) as client:
            if args.api:
                print(check_api(client, args.api.rstrip("/"), args.schema, args.timeout))
            if args.ui:
                print(check_ui(client, args.ui.rstrip("/"), args.timeout))
    except SmokeTestError as e:
        print(f"smoke test failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
