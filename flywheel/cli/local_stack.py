"""`flywheel up`, `serve`, `ui`: the processes of a running system. The only CLI module that starts the adapters in
`app/` (imported lazily, inside each command), so the rest of the CLI never loads a web server or Streamlit."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import run

    return run(args.host, args.port, args.workers, args.log_level, in_process=args.in_process)


def cmd_ui(args: argparse.Namespace) -> int:
    from app.ui.launch import run

    return run(args.host, args.port)


def cmd_up(args: argparse.Namespace) -> int:
    from app.local.stack import Options, up

    opts = Options(
        state_dir=Path(args.state_dir).resolve(),
        bucket=args.bucket,
        schema=args.schema,
        model_name=args.model,
        s3_port=args.s3_port,
        api_port=args.api_port,
        replicas=args.replicas,
        ui_port=args.ui_port,
        prometheus_port=args.prometheus_port,
        metrics_port=args.metrics_port,
        mlflow_port=args.mlflow_port,
        ui=not args.no_ui,
        prometheus=not args.no_prometheus,
        mlflow=not args.no_mlflow,
        seed=not args.no_seed,
    )
    return up(opts)


def add_parsers(add: Add) -> None:
    p = add("serve", cmd_serve, "Run one prediction API replica (hot-reloads the production model).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=int(os.environ.get("FLYWHEEL_API_PORT", "8080")), help="port")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="request processes beside the agent that polls, verifies, captures (docs/serving.md)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="one process answers requests and does the background work too (no agent)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    p = add("ui", cmd_ui, "Run the Streamlit UI (talks to the API at $FLYWHEEL_API_URL).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8501, help="port")

    p = add("up", cmd_up, "Run the whole system locally: embedded S3 + SQS, trainer worker, API replicas, UI.")
    p.add_argument("--state-dir", default=os.environ.get("FLYWHEEL_STATE_DIR", ".flywheel"),
                   help="where data, versions and logs persist between runs (default ./.flywheel)")  # fmt: skip
    p.add_argument("--bucket", default="flywheel-local", help="bucket name in the embedded S3")
    p.add_argument("--model", default="savings", help="model name")
    p.add_argument("--schema", default=os.environ.get("FLYWHEEL_SCHEMA", "savings"),
                   help="built-in schema name or path to a schema JSON")  # fmt: skip
    p.add_argument("--s3-port", type=int, default=4566, help="embedded S3 + SQS port")
    p.add_argument("--api-port", type=int, default=8080, help="first API replica's port (others follow)")
    p.add_argument("--replicas", type=int, default=2, help="API replicas")
    p.add_argument("--ui-port", type=int, default=8501)
    p.add_argument("--prometheus-port", type=int, default=9090)
    p.add_argument("--metrics-port", type=int, default=9464, help="first API replica's /metrics port (others follow)")
    p.add_argument("--no-ui", action="store_true", help="do not start the UI")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus even if installed")
    p.add_argument("--no-seed", action="store_true", help="do not put a first batch into an empty bucket")
    p.add_argument(
        "--mlflow-port", type=int, default=5000, help="embedded MLflow's port (none when MLFLOW_TRACKING_URI is set)"
    )
    p.add_argument("--no-mlflow", action="store_true", help="no MLflow mirror: no server, no MLFLOW_TRACKING_URI")
