"""`flywheel feedback` (delayed labels) and `flywheel quality` (live quality beside the holdout score)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flywheel.cli.models import actor, core
from flywheel.errors import FlywheelError


def cmd_feedback(args: argparse.Namespace) -> int:
    from flywheel.cli.data import rejection_text
    from flywheel.data.uploads import put_new
    from flywheel.errors import BatchRejected
    from flywheel.feedback.labels import feedback_prefix, validate_feedback
    from flywheel.names import check_name
    from flywheel.registry.registrations import schema_for
    from flywheel.storage import s3_client

    s, s3 = core(args), s3_client()
    path = Path(args.file)
    if not path.is_file():
        raise FlywheelError(f"{path}: no such file")
    model = check_name(args.model or s.model_name)
    schema = schema_for(s3, s, model)
    try:
        table = validate_feedback(path, str(path), schema)
    except BatchRejected as e:  # nothing is uploaded: the file is fixed and sent again
        report = {"file": str(path), "accepted": False, **e.to_dict()}
        print(json.dumps(report, indent=2) if args.json else rejection_text(e))
        return 1
    name = args.name or path.name
    key = feedback_prefix(model) + (name if name.endswith(".csv") else f"{name}.csv")
    with path.open("rb") as body:
        put_new(s3, s.bucket, key, body, via="flywheel-cli", how_to_rename="choose another with --as NAME",
                metadata={"uploaded-by": f"{actor()} (cli)"})  # fmt: skip
    report = {"file": str(path), "accepted": True, "model": model, "labels": table.num_rows,
              "target": schema.target.name, "uploaded": f"s3://{s.bucket}/{key}"}  # fmt: skip
    text = (f"{path}: accepted, {table.num_rows} label(s) of {schema.target.name!r} for model {model}; "
            f"uploaded -> s3://{s.bucket}/{key}")  # fmt: skip
    if args.train:  # the labelled captures become a batch: the next retrain learns from live traffic
        from flywheel.data.uploads import BatchExists
        from flywheel.feedback.labelled_batches import batch_key, write_batch

        try:
            made = write_batch(s3, s, model, schema, key, uploaded_by=f"{actor()} (cli)", labels=table.to_pandas())
        except BatchExists:  # the trainer got there first (the model's feedback policy says train): one batch
            done = batch_key(s, model, key)
            report["batch"] = {"key": done, "rows": None, "unmatched": None, "ambiguous": None,
                               "ambiguous_ids": None, "written_by": "trainer"}  # fmt: skip
            print(json.dumps(report, indent=2) if args.json else f"{text}\nbatch s3://{s.bucket}/{done} already "
                  "written by the trainer on arrival (the model's feedback policy says train)")  # fmt: skip
            return 0
        report["batch"] = {"key": made.key, "rows": made.joined, "unmatched": made.unmatched,
                           "ambiguous": made.ambiguous, "ambiguous_ids": made.ambiguous_ids}  # fmt: skip
        text += (
            f"\n{made.joined} labelled prediction(s) -> batch s3://{s.bucket}/{made.key}"
            if made.key
            else "\nno label matched a captured prediction (captures reach S3 within FLYWHEEL_CAPTURE_FLUSH_SECONDS)"
        )
        text += f"; {made.unmatched} label(s) without a captured prediction" if made.unmatched else ""
        if made.ambiguous:  # docs/captures.md, "Ids and keys"
            more = ", ..." if made.ambiguous > len(made.ambiguous_ids) else ""
            text += (f"; {made.ambiguous} label(s) left out, their ids captured under more than one API key "
                     f"(ambiguous: {', '.join(made.ambiguous_ids)}{more})")  # fmt: skip
    print(json.dumps(report, indent=2) if args.json else text)
    return 0


def cmd_feedback_policy(args: argparse.Namespace) -> int:
    from flywheel.errors import NotFound
    from flywheel.feedback.policy import get_policy, set_policy
    from flywheel.names import check_name
    from flywheel.registry.registrations import models
    from flywheel.storage import s3_client

    s, s3 = core(args), s3_client()
    model = check_name(args.model or s.model_name)
    found = models(s3, s)
    if model not in found:
        raise NotFound(f"model {model!r} is not registered (registered: {sorted(found)})")
    if args.train is None:
        pol = get_policy(s3, s.bucket, model, s.models_prefix)
    else:
        pol = set_policy(s3, s.bucket, model, train=args.train, by=f"{actor()} (cli)", models_prefix=s.models_prefix)
    if args.json:
        print(json.dumps({"model": model, **pol.to_dict()}, indent=2))
        return 0
    what = ("on: each feedback file's labelled captures become a batch under data/" + model + "/feedback/"
            if pol.train else "off: feedback files update live quality only")  # fmt: skip
    who = f" (set by {pol.by} at {pol.at})" if pol.by else " (the default: nobody set it)"
    print(f"{model}: {'set: ' if args.train is not None else ''}train on feedback {what}{who}")
    return 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _quality_text(q: dict[str, Any]) -> list[str]:
    from flywheel.feedback.live_quality import METRICS  # loaded already: the report came from live_quality

    names = list(METRICS[q["task"]])
    w = {n: len(n) + 7 for n in names}  # "live <name>" and two spaces
    lines = [f"{q['model']} ({q['task']}; holdout: the gate's {q['primary_metric']} at training time)"]
    if not q["versions"]:
        lines.append("  no captured predictions yet")
    else:
        head = "".join(f"{'live ' + n:>{w[n]}}" for n in names)
        lines.append(f"  {'version':>7} {'day':10} {'captured':>9} {'labelled':>9} {'holdout':>9}{head}")
    for v in q["versions"]:
        holdout = _num(v["holdout"]["score"])  # the metric is named in the model's line
        live = "".join(f"{_num(v['live'][n]):>{w[n]}}" for n in names)
        lines.append(f"  {v['version']:>7} {'all':10} {v['captured']:>9} {v['live']['n']:>9} {holdout:>9}{live}")
        for d in v["days"]:
            figs = "".join(f"{_num(d[n]):>{w[n]}}" for n in names)
            lines.append(f"  {'':>7} {d['day']:10} {'':>9} {d['n']:>9} {'':>9}{figs}")
    lab = q["labels"]
    unmatched = f" ({', '.join(lab['unmatched_ids'])}{', ...' if lab['unmatched'] > len(lab['unmatched_ids']) else ''})"
    lines.append(f"  labels: {lab['ids']} id(s) from {lab['files']} file(s), {lab['matched']} matched, "
                 f"{lab['unmatched']} unmatched{unmatched if lab['unmatched'] else ''}, "
                 f"{lab['relabelled']} relabelled by a newer file")  # fmt: skip
    if lab.get("ambiguous"):  # ids captured under more than one API key join nothing (docs/captures.md)
        more = ", ..." if lab["ambiguous"] > len(lab["ambiguous_ids"]) else ""
        lines.append(f"  {lab['ambiguous']} ambiguous (captured under more than one API key, not joined): "
                     f"{', '.join(lab['ambiguous_ids'])}{more}")  # fmt: skip
    for bad in q["skipped"]:
        lines.append(f"  skipped {bad['error']}")
    return lines


def cmd_quality(args: argparse.Namespace) -> int:
    from flywheel.errors import NotFound
    from flywheel.feedback.live_quality import live_quality
    from flywheel.registry.registrations import models
    from flywheel.storage import s3_client

    s, s3 = core(args), s3_client()
    found = models(s3, s)
    if args.model and args.model not in found:
        raise NotFound(f"model {args.model!r} is not registered (registered: {sorted(found)})")
    names = [args.model] if args.model else list(found)
    report = {n: live_quality(s3, s.bucket, n, found[n], models_prefix=s.models_prefix) for n in names}
    if args.json:  # one model: its report; all: {model: report}
        print(json.dumps(report[args.model] if args.model else report, indent=2))
        return 0
    for n in names:
        print("\n".join(_quality_text(report[n])) + "\n")
    print("'labelled': captured predictions with a label (the n behind each live figure; R² needs 2). "
          "'holdout': the gate's score at training time. Days are UTC days of the capture.")  # fmt: skip
    return 0


def add_parsers(add: Any, common: Any) -> None:
    """`flywheel feedback` and `flywheel quality`, on the main parser's sub-command factory."""
    help_ = (
        "Check a CSV of delayed labels (columns 'id' and the model's target) and upload it under "
        "feedback/<model>/; a bad file is reported, not uploaded. On arrival the trainer (the cloud's Lambda, "
        "the worker of `flywheel up`) checks the file again, republishes the model's live quality "
        "(models/<model>/live-quality.json) and, when the model's feedback policy says train "
        "(`flywheel feedback-policy`), writes the labelled captures as a batch; a bad file uploaded another way "
        "is quarantined under quarantine/_feedback/ with a report."
    )
    p = add("feedback", cmd_feedback, help_)
    common(p)
    p.add_argument("file", help="CSV file: 'id' (a prediction id) and the target column")
    p.add_argument("--as", dest="name", metavar="NAME",
                   help="name under feedback/<model>/ (default: the file name); files are never replaced")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--train", action="store_true",
                   help="also write the labelled captured predictions as a batch under data/<model>/feedback/ "
                        "now (the next retrain trains on them, its manifest lists the batch); the trainer does "
                        "this on arrival when the model's feedback policy says train")  # fmt: skip

    p = add("feedback-policy", cmd_feedback_policy, "Show whether a model's labelled captures become training "
            "data when a feedback file arrives (default: off), or set it with --train / --no-train; recorded "
            "with your user name ($USER) and the time in models/<model>/feedback-policy.json.")  # fmt: skip
    common(p)
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=None,
                   help="on: the trainer writes each arriving feedback file's labelled captures as a batch under "
                        "data/<model>/feedback/; off: live quality only")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the policy as JSON")

    p = add("quality", cmd_quality, "Live quality per version and per day (captured predictions joined with "
                                    "their labels) beside the gate's holdout score.")  # fmt: skip
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
