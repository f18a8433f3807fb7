"""`flywheel schema infer FILE --target COLUMN`: a first schema for your own CSV (docs/schema.md, "Your own data").

No bucket is needed. The guesses go to stderr, one line per column; the schema JSON to stdout or --out. The file is
then checked against the schema as `flywheel validate` would: exit 0 only when it passes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from flywheel.cli.data import rejection_text
from flywheel.errors import BatchRejected, FlywheelError

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def cmd_infer(args: argparse.Namespace) -> int:
    from flywheel.data.schema_inference import CannotInfer, dumps, infer_schema
    from flywheel.data.validation import validate_stream
    from flywheel.settings import TrainerSettings

    path = Path(args.file)
    if not path.is_file():
        raise FlywheelError(f"{path}: no such file")
    try:
        found = infer_schema(path, str(path), args.target, task=args.task, name=args.name)
    except CannotInfer as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    except BatchRejected as e:
        print(rejection_text(e), file=sys.stderr)
        return 1
    print(f"{path}: {found.rows} rows, {len(found.notes)} columns; {found.schema.task} of {args.target!r}",
          file=sys.stderr)  # fmt: skip
    for line in found.notes:
        print(f"  {line}", file=sys.stderr)
    text = dumps(found.schema)
    if args.out in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    share = TrainerSettings.model_fields["max_duplicate_fraction"].default
    try:  # the proof the brief promises: the same file passes the trainer's checks with this schema
        validate_stream(path, str(path), found.schema, max_duplicate_fraction=share)
    except BatchRejected as e:
        print("the file does not pass `flywheel validate` with this schema (fix the data, then run again):\n"
              + rejection_text(e), file=sys.stderr)  # fmt: skip
        return 1
    print(f"checked: {path} passes `flywheel validate` with this schema; review it before `flywheel models add`",
          file=sys.stderr)  # fmt: skip
    return 0


def add_parsers(add: Add) -> None:
    p = add("schema", lambda _: 2, "Schemas for your own data: `schema infer FILE --target COLUMN`.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = sub.add_parser("infer", help="propose a schema from a CSV (no bucket needed)",
                       description="Propose a schema from a CSV: types, categories, task and safe bounds guessed from "
                                   "the data, one line per column on stderr, the JSON on stdout or --out. Exit 0 "
                                   "when the file passes `flywheel validate` with it, 1 when it cannot.")  # fmt: skip
    i.add_argument("file", help="CSV file with a header (read in blocks: any size)")
    i.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict")
    i.add_argument("--task", choices=["regression", "classification"],
                   help="default: guessed from the target (text or a few whole numbers: classification)")  # fmt: skip
    i.add_argument("--out", metavar="PATH", help="write the schema here (default: stdout)")
    i.add_argument("--name", help="the schema's name (default: the file's name without .csv)")
    i.set_defaults(func=cmd_infer)
