"""Smoke-test a deployed Flywheel through its public URLs (the deploy workflow runs this after a rollout).

    FLYWHEEL_API_KEY=<key> python scripts/smoke_test.py --api https://<api> --ui https://<ui> [--timeout 600]

Waits for the load balancers to answer (new DNS names take minutes), then: the API is ready with a model,
refuses a request without an API key (401) and keeps /metrics off its public port; with a key (--api-key or
FLYWHEEL_API_KEY, a `client` key from `flywheel apikey create`) it predicts a few rows of the schema's demo data
and describes the model without golden rows; the UI answers its health check. Exits non-zero with the reason on
the first failed check. Without --api only the UI is checked.
"""

from __future__ import annotations

import argparse
import json
import os
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
    from flywheel.data.sample_data import GENERATORS
    from flywheel.schema import load_schema

    features = load_schema(schema).feature_names
    frame = GENERATORS[schema](rows, seed=20)[features]
    return json.loads(frame.to_json(orient="records"))


def check_api(client: httpx.Client, api: str, schema: str, timeout: float, key: str | None) -> str:
    # /readyz says which version serves only to a key (a probe tells a stranger nothing more than ready)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ready = wait_for("API /readyz", lambda: client.get(f"{api}/readyz", headers=headers), timeout).json()
    version = ready.get("model_version", "(not shown without a key)")
    instances = demo_instances(schema, 3)
    anonymous = client.post(f"{api}/v1/predict", json={"instances": instances})
    if anonymous.status_code != 401:
        raise SmokeTestError(f"POST /v1/predict without an API key: HTTP {anonymous.status_code}, expected 401")
    metrics = client.get(f"{api}/metrics")
    if metrics.status_code == 200:
        raise SmokeTestError("GET /metrics answered on the public API port; it belongs on the metrics port only")
    if not key:
        return f"API ready with model version {version}; refuses requests without a key (no key given to predict)"
    auth = {"Authorization": f"Bearer {key}"}
    resp = client.post(f"{api}/v1/predict", json={"instances": instances}, headers=auth)
    if resp.status_code != 200:
        raise SmokeTestError(f"POST /v1/predict: HTTP {resp.status_code}: {resp.text[:300]}")
    predictions = resp.json().get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(instances):
        raise SmokeTestError(f"POST /v1/predict: expected {len(instances)} predictions, got {resp.text[:300]}")
    model = client.get(f"{api}/v1/model", headers=auth)
    if model.status_code != 200:
        raise SmokeTestError(f"GET /v1/model: HTTP {model.status_code}")
    return f"API ready with model version {version}; refuses requests without a key; predicted {len(predictions)} rows"


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
    parser.add_argument(
        "--api-key",
        default=os.environ.get("FLYWHEEL_API_KEY"),
        help="a client API key (default: $FLYWHEEL_API_KEY); without one, predicting is skipped",
    )
    args = parser.parse_args(argv)
    if not (args.api or args.ui):
        parser.error("give --api, --ui or both")
    try:
        with httpx.Client(timeout=10, follow_redirects=True) as client:
            if args.api:
                print(check_api(client, args.api.rstrip("/"), args.schema, args.timeout, args.api_key))
            if args.ui:
                print(check_ui(client, args.ui.rstrip("/"), args.timeout))
    except SmokeTestError as e:
        print(f"smoke test failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
