"""`flywheel sample-data`, `drop`, `validate`, `retrain`: making, checking and uploading batches, and a retrain now.

`drop` checks a file against its model's schema before uploading it, as `validate --model` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flywheel.cli.models import actor, core
from flywheel.errors import FlywheelError

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def cmd_sample_data(args: argparse.Namespace) -> int:
    from flywheel.data.sample_data import GENERATORS

    frame = GENERATORS[args.dataset](args.rows, seed=args.seed, drift=args.drift)
    if args.out == "-":
        frame.to_csv(sys.stdout, index=False)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from flywheel.jobs.retrain import retrain
    from flywheel.settings import TrainerSettings
    from flywheel.storage import s3_client

    s = core(args, TrainerSettings)
    adopt = None if args.adopt_lock in (None, "", "none") else args.adopt_lock
    outcome = retrain(s, s3_client(), model=args.model, actor=actor(), adopt_lock=adopt)
    for q in outcome.quarantined:
        print(f"quarantined {q.key} -> {q.quarantine_key}: {q.problems[0]['message']}")
    print(f"{outcome.status}: {outcome.model} version {outcome.version}, production {outcome.production_version}, "
          f"{outcome.rows} rows")  # fmt: skip
    for r in outcome.reasons:
        print(f"  {r}")
    if outcome.mlflow:
        print(f"  mlflow: {outcome.mlflow}")
    return 0


def model_schema(args: argparse.Namespace, s: Any, s3: Any) -> Any:
    """The schema the trainer checks `--model`'s batches against (read only; see registrations.batch_schema)."""
    from flywheel.errors import NotFound
    from flywheel.names import check_name
    from flywheel.registry.registrations import batch_schema

    name = check_name(args.model or s.model_name)
    try:
        return batch_schema(s3, s, name)
    except NotFound as e:
        raise NotFound(f"{e.message}; register it first: flywheel models add {name} --schema S", model=name) from e


def cmd_drop(args: argparse.Namespace) -> int:
    from flywheel.data.uploads import put_new
    from flywheel.data.validation import validate_stream
    from flywheel.errors import BatchRejected
    from flywheel.names import check_name, data_prefix
    from flywheel.registry.store import Registry
    from flywheel.settings import TrainerSettings
    from flywheel.storage import s3_client

    s, s3 = core(args, TrainerSettings), s3_client()
    path = Path(args.file)
    if not path.is_file():
        raise FlywheelError(f"{path}: no such file")
    model = check_name(args.model or s.model_name)
    key = data_prefix(s, model) + (args.name or path.name)
    if not args.no_check:  # streamed from the file, as validate reads it; the upload streams it again
        try:
            validate_stream(path, str(path), model_schema(args, s, s3), max_duplicate_fraction=s.max_duplicate_fraction)
        except BatchRejected as e:
            print(rejection_text(e))
            print("not uploaded: the trainer would quarantine it (--no-check uploads it anyway)", file=sys.stderr)
            return 1
    before = max(Registry(s3, s.bucket, model, s.models_prefix).versions(), default=0)
    with path.open("rb") as body:
        put_new(s3, s.bucket, key, body, via="flywheel-cli", how_to_rename="choose another with --as NAME",
                metadata={"uploaded-by": f"{actor()} (cli)"})  # fmt: skip
    print(f"uploaded {path} -> s3://{s.bucket}/{key}", flush=True)
    return _wait_for_outcome(s, s3, model, key, before, args.wait) if args.wait else 0


def _wait_for_outcome(s: Any, s3: Any, model: str, key: str, before: int, timeout: float) -> int:
    """`drop --wait`: poll until the trainer has quarantined the batch or trained on it (or left it out)."""
    from flywheel.jobs.batch_outcome import batch_outcome

    print(f"waiting up to {timeout:g} s for the trainer ...", file=sys.stderr, flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = batch_outcome(s3, s, model, key, before)
        if outcome is not None:
            print("\n".join(outcome.lines))
            return 0 if outcome.accepted else 1
        time.sleep(1.0)
    print(f"{key}: no outcome after {timeout:g} s (the trainer may be busy): see `flywheel models --model {model}`",
          file=sys.stderr)  # fmt: skip
    return 1


def cmd_validate(args: argparse.Namespace) -> int:
    from flywheel.data.validation import validate_stream
    from flywheel.errors import BatchRejected
    from flywheel.schema import load_schema
    from flywheel.settings import TrainerSettings

    path = Path(args.file)
    if not path.is_file():
        raise FlywheelError(f"{path}: no such file")
    if args.schema and args.model:
        raise FlywheelError("give --schema or --model, not both")
    share = args.max_duplicate_fraction
    if share is None:
        share = TrainerSettings.model_fields["max_duplicate_fraction"].default
    if args.model:  # the registered schema, from the bucket
        from flywheel.storage import s3_client

        schema = model_schema(args, core(args), s3_client())
    else:
        schema = load_schema(args.schema or os.environ.get("FLYWHEEL_SCHEMA", "savings"))
    size = path.stat().st_size
    try:
        found = validate_stream(path, str(path), schema, max_duplicate_fraction=share)
    except BatchRejected as e:
        report = {"file": str(path), "accepted": False, **e.to_dict()}
        print(json.dumps(report, indent=2) if args.json else rejection_text(e))
        return 1
    report = {"file": str(path), "accepted": True, "rows": found.rows, "duplicate_rows": found.duplicates,
              "bytes": size}  # fmt: skip
    print(json.dumps(report, indent=2) if args.json else
          f"{path}: accepted, {found.rows} rows ({found.duplicates} exactly repeated), {size} bytes")  # fmt: skip
    return 0


def rejection_text(e: Any) -> str:
    lines = [f"{e.key}: rejected"]
    for p in e.problems:
        column = f" [{p['column']}]" if p.get("column") else ""
        lines.append(f"  {p['check']}{column}: {p['message']}")
    return "\n".join(lines)


def add_parsers(add: Add, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = add("sample-data", cmd_sample_data, "Generate a demo batch (CSV) from the documented process.")
    p.add_argument("--rows", type=int, default=5000, help="number of rows (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same file")
    p.add_argument("--out", default="-", help="output file ('-' for stdout)")
    p.add_argument("--drift", type=float, default=0.0, help="population shift, 0 (none) to 1 (strong)")
    p.add_argument("--dataset", choices=["savings", "churn"], default="savings", help="which demo dataset")

    p = add("retrain", cmd_retrain, "Run the trainer over the bucket now (as the Lambda does).")
    common(p)
    p.add_argument("--adopt-lock", metavar="TOKEN",
                   help="take over the lock the Lambda claimed for this run (passed by the hand-off)")  # fmt: skip

    p = add("drop", cmd_drop, "Check a CSV batch against the model's schema (as validate --model), then upload it "
                              "into data/<model>/ (triggers that model's trainer). A file the trainer would "
                              "quarantine is refused with the report (exit 1); an existing name is "
                              "refused.")  # fmt: skip
    common(p)
    p.add_argument("file", help="CSV file to upload")
    p.add_argument("--as", "--key", dest="name", metavar="NAME",
                   help="object name under data/ (default: the file name); batches are never replaced")  # fmt: skip
    p.add_argument("--no-check", action="store_true",
                   help="upload without checking the file against the model's schema first (the trainer still "
                        "checks it and quarantines a bad batch)")  # fmt: skip
    p.add_argument("--wait", type=float, nargs="?", const=300.0, default=None, metavar="SECONDS",
                   help="then wait (300 s, or SECONDS) for the trainer and print what became of the batch: the "
                        "version it trained and where that stands, or the quarantine report (exit 1)")  # fmt: skip

    p = add("validate", cmd_validate, "Check a CSV batch locally, as the trainer will: exit 0 accepted, 1 rejected.")
    p.add_argument("file", help="CSV file to check")
    p.add_argument("--schema", help="built-in schema name or schema JSON path, no bucket needed "
                                    "(default without --model: $FLYWHEEL_SCHEMA or savings)")  # fmt: skip
    p.add_argument("--bucket", help="bucket of --model (default: $FLYWHEEL_BUCKET)")
    p.add_argument("--model", help="check against this registered model's schema, read from the bucket")
    p.add_argument("--max-duplicate-fraction", type=float, default=None,
                   help="share of exactly repeated rows accepted (default: the trainer's, 0.01)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON (what quarantine writes)")
