"""`flywheel rollout status|start|promote|abort|judge|policy`: a candidate judged on live traffic (docs/rollouts.md).

`status` prints flywheel/release/rollout_view.py's snapshot, as the UI's models page shows it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from typing import Any

from flywheel.cli.models import actor, core, registry
from flywheel.errors import FlywheelError
from flywheel.release.rollout_view import snapshot

THRESHOLD_OPTIONS = {"min_requests": int, "min_seconds": float, "max_seconds": float, "min_pods": int}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _status_text(snap: dict[str, Any]) -> list[str]:
    r = snap["rollout"]
    lines = [
        f"{snap['model']}: {r['mode']} rollout of v{r['candidate']} against v{r['baseline']}, share {r['share']:g}: "
        f"{r['status']}",
        f"  started by {r['started_by']} at {r['started_at']}",
    ]
    if r["status"] != "running":
        lines.append(f"  {r['status']} by {r['decided_by']} at {r['decided_at']}: {r['reason']}")
    lines.append(f"  {'version':14} {'requests':>9} {'errors':>7} {'error rate':>10} {'p99 ms':>8} "
                 f"{'agreement':>9} {'rel. diff':>9}")  # fmt: skip
    for role, v in (("candidate", r["candidate"]), ("production", r["baseline"])):
        f = snap[role]
        if f is None:
            continue
        lines.append(f"  {f'{role} v{v}':14} {f['requests']:>9} {f['errors']:>7} {_pct(f['error_rate']):>10} "
                     f"{_num(f['p99_ms'], '.1f'):>8} {_pct(f['agreement']):>9} "
                     f"{_num(f['mean_relative_difference'], '.3f'):>9}")  # fmt: skip
    lines.append(f"  pods reporting: {snap['pods']}")
    if snap["problem"]:
        lines.append(f"  statistics refused: {snap['problem']}")
    if snap["verdict"]:
        lines.append(f"  the judge now: {snap['verdict']['action']}: {snap['verdict']['reason']}")
    lines.append("  thresholds: " + ", ".join(f"{k} {v:g}" for k, v in r["thresholds"].items()))
    lines.append(f"  history of v{r['candidate']}:")
    lines += [f"    {e['when']} {e['what']} by {e['who']}: {e.get('reason', '')}" for e in snap["history"]]
    return lines


def _print(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    print(json.dumps(data, indent=2) if args.json else "\n".join(lines))


def cmd_status(args: argparse.Namespace) -> int:
    reg = registry(args)
    snap = snapshot(reg)
    if snap is None:
        _print(args, {"model": reg.name, "rollout": None}, [f"{reg.name}: no rollout"])
        return 0
    _print(args, snap, _status_text(snap))
    return 0


def _deployment_policy(args: argparse.Namespace, reg: Any) -> Any:
    """The model's policy, or the deployment's FLYWHEEL_ROLLOUT_MODE / FLYWHEEL_ROLLOUT_SHARE."""
    from flywheel.release.rollout_actions import policy
    from flywheel.settings import TrainerSettings

    s = core(args, TrainerSettings)
    return policy(reg, s.rollout_mode, s.rollout_share)


def _thresholds(base: Any, args: argparse.Namespace) -> Any:
    changes = {k: getattr(args, k) for k in THRESHOLD_OPTIONS if getattr(args, k) is not None}
    try:
        return replace(base, **changes)
    except ValueError as e:
        raise FlywheelError(f"invalid thresholds: {e}") from e


def cmd_start(args: argparse.Namespace) -> int:
    from flywheel.cli.mirror_note import report_mirror
    from flywheel.errors import ConflictError
    from flywheel.release.rollout_actions import begin

    reg = registry(args)
    pol = _deployment_policy(args, reg)
    mode = args.mode or pol.mode
    if mode == "direct":
        raise FlywheelError(f"{reg.name}'s rollout policy is direct: choose --mode shadow or --mode canary")
    manifest = reg.manifest(args.version)
    if manifest["status"] != "promoted" and not args.force:
        raise ConflictError(f"v{args.version} was rejected by the gate; pass --force to roll it out anyway")
    share = pol.share if args.share is None else args.share
    try:
        r = begin(
            reg, args.version, actor=actor(), mode=mode, share=share, thresholds=_thresholds(pol.thresholds, args)
        )
    except ValueError as e:
        raise FlywheelError(str(e)) from e
    t = r.thresholds
    _print(args, r.to_dict(), [
        f"{reg.name}: {r.mode} rollout of v{r.candidate} against v{r.baseline} started by {r.started_by}, "
        f"share {r.share:g}; the judge decides after {t.min_requests} requests and {t.min_seconds:g} s "
        f"(aborts without a sample after {t.max_seconds:g} s)"])  # fmt: skip
    report_mirror(reg)
    return 0


def _decide(args: argparse.Namespace, what: str) -> int:
    from flywheel.cli.mirror_note import report_mirror
    from flywheel.release import rollout_actions

    reg, who = registry(args), actor()
    reason = args.reason or f"{what} by operator {who} (flywheel rollout {what})"
    act = rollout_actions.promote if what == "promote" else rollout_actions.abort
    r = act(reg, actor=who, reason=reason, expected_candidate=args.candidate)
    alias = reg.alias()
    serving = alias.version if alias else None
    data = {**r.to_dict(), "production": serving}
    _print(args, data, [f"{reg.name}: rollout of v{r.candidate} {r.status} by {r.decided_by}: {r.reason}",
                        f"  production: v{serving}"])  # fmt: skip
    report_mirror(reg)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    return _decide(args, "promote")


def cmd_abort(args: argparse.Namespace) -> int:
    return _decide(args, "abort")


def cmd_judge(args: argparse.Namespace) -> int:
    from flywheel.jobs.judge_pass import judge_all, judge_model

    if args.model:
        passes = [judge_model(registry(args))]
    else:
        from flywheel.storage import s3_client

        passes = judge_all(s3_client(), core(args))
    lines = []
    for p in passes:
        if p.action == "none":
            lines.append(f"{p.model}: no running rollout")
        else:
            lines.append(f"{p.model}: v{p.candidate} {p.action} ({p.pods} pods reporting): {p.reason}")
    _print(args, [p.to_dict() for p in passes], lines)
    return 1 if any(p.action == "error" for p in passes) else 0


def cmd_policy(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError

    from flywheel.release.rollout_actions import Policy, policy_key, set_policy
    from flywheel.storage import is_missing

    reg = registry(args)
    pol = _deployment_policy(args, reg)
    changing = args.mode is not None or args.share is not None or any(getattr(args, k) is not None
                                                                       for k in THRESHOLD_OPTIONS)  # fmt: skip
    if changing:
        try:
            pol = Policy(args.mode or pol.mode, pol.share if args.share is None else args.share,
                         _thresholds(pol.thresholds, args))  # fmt: skip
        except ValueError as e:
            raise FlywheelError(str(e)) from e
        set_policy(reg, pol)
    try:
        reg.s3.head_object(Bucket=reg.bucket, Key=policy_key(reg))
        source = "the model's own"
    except ClientError as e:
        if not is_missing(e):
            raise
        source = "the deployment's default: FLYWHEEL_ROLLOUT_MODE / FLYWHEEL_ROLLOUT_SHARE"
    data = {"model": reg.name, "source": "model" if source.startswith("the model") else "deployment", **pol.to_dict()}
    share = "" if pol.mode == "direct" else f" at {pol.share:g}"
    limits = ", ".join(f"{k} {v:g}" for k, v in asdict(pol.thresholds).items())
    _print(args, data, [f"{reg.name}: {'set: ' if changing else ''}{pol.mode}{share} ({source})",
                        f"  thresholds (for shadow and canary): {limits}"])  # fmt: skip
    return 0


def add_parsers(add: Any, common: Any) -> None:
    """`flywheel rollout ACTION`, on the main parser's sub-command factory."""
    p = add("rollout", cmd_status, "Candidate versions judged on live traffic beside production (shadow or canary): "
            "status, start, promote, abort, judge, policy. See docs/rollouts.md.")  # fmt: skip
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, func: Any, help_: str, json_help: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help_, description=help_)
        a.set_defaults(func=func)
        common(a)
        a.add_argument("--json", action="store_true", help=json_help)
        return a

    def thresholds(a: argparse.ArgumentParser, default: str) -> None:
        a.add_argument("--min-requests", type=int, help=f"requests each version needs before a verdict ({default})")
        a.add_argument("--min-seconds", type=float, help=f"seconds after the start before a verdict ({default})")
        a.add_argument(
            "--max-seconds",
            type=float,
            help=f"abort when there is still no sufficient sample this long after the start ({default})",
        )
        a.add_argument("--min-pods", type=int, help=f"replicas whose statistics a verdict needs ({default})")

    action("status", cmd_status, "Show the model's rollout: mode, share, candidate and baseline, the fleet's "
           "statistics per version, what the judge would decide now (nothing is recorded), the thresholds and "
           "the candidate's history.", "print the rollout, statistics, verdict and history as JSON")  # fmt: skip
    a = action("start", cmd_start, "Start a rollout of VERSION against the version in production. Mode, share "
               "and thresholds default to the model's policy (`flywheel rollout policy`), else the deployment's "
               "FLYWHEEL_ROLLOUT_MODE / FLYWHEEL_ROLLOUT_SHARE. Refused while a rollout of the model runs.",
               "print the new rollout as JSON")  # fmt: skip
    a.add_argument("version", type=int, help="the candidate: a published version, not the one in production")
    a.add_argument("--mode", choices=["shadow", "canary"], help="required when the policy is direct")
    a.add_argument("--share", type=float, help="share of requests the candidate runs on (shadow) or answers (canary)")
    a.add_argument("--force", action="store_true", help="allow a version the gate rejected")
    thresholds(a, "default: the policy's")
    for name, func, verb in (("promote", cmd_promote, "Promote the running rollout's candidate now: record the "
                              "decision, then move production to it (compare-and-swap from the baseline)."),
                             ("abort", cmd_abort, "Abort the running rollout: record the decision; production "
                              "never moves; replicas drop the candidate at their next poll.")):  # fmt: skip
        a = action(name, func, verb + " Recorded with your user name ($USER) and --reason, on the rollout and in "
                   "the candidate's history.", "print the decided rollout as JSON")  # fmt: skip
        a.add_argument("--reason", default="", help="why (recorded; default: names you and the command)")
        a.add_argument("--candidate", type=int, help="refuse unless the running rollout is of this version")
    action("judge", cmd_judge, "Run one judge pass now, as the scheduled judge does: gather the statistics, judge, "
           "and record a promote or abort. Without --model, every registered model. Exit 1 if a model failed.",
           "print each model's outcome as JSON")  # fmt: skip
    a = action("policy", cmd_policy, "Show the model's rollout policy (how its approved versions reach "
               "production), or set it with any of the options.", "print the policy as JSON")  # fmt: skip
    a.add_argument("--mode", choices=["direct", "shadow", "canary"], help="direct moves production at once")
    a.add_argument("--share", type=float, help="share of requests for the candidate, 0 < share <= 1")
    thresholds(a, "default: unchanged")
