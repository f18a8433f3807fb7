"""The `flywheel` command. Every subcommand has --help; S3 is reached through boto3 (AWS_ENDPOINT_URL)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flywheel.cli_env import settings_error, use_local_stack
from flywheel.cli_models import actor, add_parsers, core
from flywheel.errors import FlywheelError


def cmd_sample_data(args: argparse.Namespace) -> int:
    from flywheel.sampledata import GENERATORS

    frame = GENERATORS[args.dataset](args.rows, seed=args.seed, drift=args.drift)
    if args.out == "-":
        frame.to_csv(sys.stdout, index=False)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from flywheel.settings import TrainerSettings
    from flywheel.storage import s3_client
    from flywheel.trainer import retrain

    s = core(args, TrainerSettings)
    adopt = None if args.adopt_lock in (None, "", "none") else args.adopt_lock
    outcome = retrain(s, s3_client(), model=args.model, actor=actor(), adopt_lock=adopt)
    for q in outcome.quarantined:
        print(f"quarantined {q.key} -> {q.quarantine_key}: {q.problems[0]['message']}")
    print(f"{outcome.status}: {outcome.model} version {outcome.version}, production {outcome.production_version}, "
          f"{outcome.rows} rows")  # fmt: skip
    for r in outcome.reasons:
        print(f"  {r}")
    return 0


def cmd_drop(args: argparse.Namespace) -> int:
    from flywheel.registrations import check_name, data_prefix
    from flywheel.storage import s3_client
    from flywheel.uploads import put_new

    s = core(args)
    path = Path(args.file)
    if not path.is_file():
        raise FlywheelError(f"{path}: no such file")
    key = data_prefix(s, check_name(args.model or s.model_name)) + (args.name or path.name)
    with path.open("rb") as body:
        put_new(s3_client(), s.bucket, key, body, via="flywheel-cli", how_to_rename="choose another with --as NAME",
                metadata={"uploaded-by": f"{actor()} (cli)"})  # fmt: skip
    print(f"uploaded {path} -> s3://{s.bucket}/{key}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from flywheel.errors import BatchRejected
    from flywheel.schema import load_schema
    from flywheel.settings import TrainerSettings
    from flywheel.validation import validate_stream

    path = Path(args.file)
    if not path.is_file():
        raise FlywheelError(f"{path}: no such file")
    share = args.max_duplicate_fraction
    if share is None:
        share = TrainerSettings.model_fields["max_duplicate_fraction"].default
    size = path.stat().st_size
    try:
        found = validate_stream(path, str(path), load_schema(args.schema), max_duplicate_fraction=share)
    except BatchRejected as e:
        report = {"file": str(path), "accepted": False, **e.to_dict()}
        print(json.dumps(report, indent=2) if args.json else _rejection_text(e))
        return 1
    report = {"file": str(path), "accepted": True, "rows": found.rows, "duplicate_rows": found.duplicates,
              "bytes": size}  # fmt: skip
    print(json.dumps(report, indent=2) if args.json else
          f"{path}: accepted, {found.rows} rows ({found.duplicates} exactly repeated), {size} bytes")  # fmt: skip
    return 0


def _rejection_text(e: Any) -> str:
    lines = [f"{e.key}: rejected"]
    for p in e.problems:
        column = f" [{p['column']}]" if p.get("column") else ""
        lines.append(f"  {p['check']}{column}: {p['message']}")
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import run

    return run(args.host, args.port, args.workers, args.log_level)


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
        ui=not args.no_ui,
        prometheus=not args.no_prometheus,
        seed=not args.no_seed,
    )
    return up(opts)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bucket", help="bucket (default: $FLYWHEEL_BUCKET)")
    p.add_argument("--model", help="which model (default: the default model, $FLYWHEEL_MODEL_NAME or 'savings')")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flywheel",
        description="Keep a scikit-learn model fresh: drop data, retrain, gate, serve. "
        "Settings come from FLYWHEEL_* variables (docs/settings.md); S3 from AWS_ENDPOINT_URL when set.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("sample-data", cmd_sample_data, "Generate a demo batch (CSV) from the documented process.")
    p.add_argument("--rows", type=int, default=5000, help="number of rows (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same file")
    p.add_argument("--out", default="-", help="output file ('-' for stdout)")
    p.add_argument("--drift", type=float, default=0.0, help="population shift, 0 (none) to 1 (strong)")
    p.add_argument("--dataset", choices=["savings", "churn"], default="savings", help="which demo dataset")

    add_parsers(add, _common)
    from flywheel import cli_identity  # `flywheel identity token`: local sign-in for the UI

    cli_identity.add_parsers(add)
    from flywheel import cli_apikeys  # `flywheel apikey create|list|revoke`

    cli_apikeys.add_parsers(add)
    from flywheel import cli_rollout  # `flywheel rollout status|start|promote|abort|judge|policy`

    cli_rollout.add_parsers(add, _common)
    from flywheel import cli_quality  # `flywheel feedback FILE`, `flywheel quality`

    cli_quality.add_parsers(add, _common)

    p = add("retrain", cmd_retrain, "Run the trainer over the bucket now (as the Lambda does).")
    _common(p)
    p.add_argument("--adopt-lock", metavar="TOKEN",
                   help="take over the lock the Lambda claimed for this run (passed by the hand-off)")  # fmt: skip

    p = add("drop", cmd_drop, "Upload a CSV batch into data/<model>/ (triggers that model's trainer). "
                              "An existing name is refused.")  # fmt: skip
    _common(p)
    p.add_argument("file", help="CSV file to upload")
    p.add_argument("--as", "--key", dest="name", metavar="NAME",
                   help="object name under data/ (default: the file name); batches are never replaced")  # fmt: skip

    p = add("validate", cmd_validate, "Check a CSV batch locally, as the trainer will: exit 0 accepted, 1 rejected.")
    p.add_argument("file", help="CSV file to check")
    p.add_argument("--schema", default=os.environ.get("FLYWHEEL_SCHEMA", "savings"),
                   help="built-in schema name or schema JSON path (default: $FLYWHEEL_SCHEMA or savings)")  # fmt: skip
    p.add_argument("--max-duplicate-fraction", type=float, default=None,
                   help="share of exactly repeated rows accepted (default: the trainer's, 0.01)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON (what quarantine writes)")

    p = add("serve", cmd_serve, "Run one prediction API replica (hot-reloads the production model).")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=int(os.environ.get("FLYWHEEL_API_PORT", "8080")), help="port")
    p.add_argument("--workers", type=int, default=1, help="processes (metrics are per process; prefer replicas)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from botocore.exceptions import EndpointConnectionError
    from pydantic import ValidationError

    args = build_parser().parse_args(argv)
    local = use_local_stack() if args.command not in {"up", "sample-data", "validate", "serve", "ui"} else None
    try:
        code: int = args.func(args)
    except FlywheelError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    except ValidationError as e:
        print(f"error: {settings_error(e, local)}", file=sys.stderr)
        return 2
    except EndpointConnectionError as e:
        hint = f" (from {local}: is `make up` still running?)" if local else ""
        print(f"error: cannot reach S3 at {e.kwargs.get('endpoint_url')}{hint}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
