"""One judge pass over every model with a rollout: gather the fleet's statistics, judge, record, settle.

Run on a schedule: by the judge Lambda in the cloud (lambdas/judge/handler.py, every minute) and by
`flywheel up`'s worker locally; `flywheel rollout judge` runs one pass by hand. Passes are idempotent and
safe to overlap: every write is a compare-and-swap, so of two judges deciding at once one wins and the other
gets ConflictError, which is reported, not raised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from flywheel.errors import ConflictError, NotFound
from flywheel.registry import registrations
from flywheel.registry.store import Registry
from flywheel.release import rollout_actions
from flywheel.release.judge import Verdict, judge
from flywheel.release.rollout_state import Rollout, load, production_moved
from flywheel.release.rollout_stats import collect
from flywheel.settings import CoreSettings
from flywheel.tracking.mirror import after_alias_move

log = logging.getLogger(__name__)


@dataclass
class Pass:
    """What one judge pass did for one model."""

    model: str
    candidate: int | None = None
    action: str = "none"  # none | wait | promote | abort | settled | conflict
    reason: str = ""
    pods: int = 0
    figures: dict[str, float] = field(default_factory=dict)
    mlflow: str = ""  # after a decision, the MLflow mirror's aliases: "" off, "mirrored", or why it stopped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_model(registry: Registry, now: datetime | None = None, deadline: float | None = None) -> Pass:
    """One pass over one model's rollout; after a decision, the MLflow mirror's aliases (never past `deadline`,
    epoch seconds: what the caller has left)."""
    now = now or datetime.now(UTC)
    out = Pass(registry.name)
    found = load(registry)
    if found is None:
        return out
    rollout, etag = found
    out.candidate = rollout.candidate
    if not rollout.running:
        note = rollout_actions.settle(registry, rollout)  # a promotion interrupted before the alias moved
        if note and "->" in note:
            out.action, out.reason = "settled", note
        return out
    try:
        moved = production_moved(registry, rollout)
        if moved:
            out.action, out.reason = "abort", moved
            rollout_actions.abort(registry, actor=rollout_actions.JUDGE, reason=out.reason, expected_etag=etag)
            return out
        verdict = _verdict(registry, rollout, now, out)
        out.action, out.reason, out.figures = verdict.action, verdict.reason, verdict.figures
        if verdict.action == "promote":
            rollout_actions.promote(registry, actor=rollout_actions.JUDGE, reason=verdict.reason, expected_etag=etag,
                                figures=verdict.figures)  # fmt: skip
        elif verdict.action == "abort":
            rollout_actions.abort(registry, actor=rollout_actions.JUDGE, reason=verdict.reason, expected_etag=etag,
                              figures=verdict.figures)  # fmt: skip
    except (ConflictError, NotFound) as e:  # an operator or another judge decided first: theirs stands
        out.action, out.reason = "conflict", str(e)
    if out.action in ("promote", "abort"):
        log.warning("rollout of %s v%s: %s: %s", registry.name, rollout.candidate, out.action, out.reason)
    if out.action in ("promote", "abort", "settled"):
        left = None if deadline is None else deadline - time.time()
        done = after_alias_move(registry, budget=left)  # never raises: a failure is recorded and counted
        out.mlflow = "" if done is None else "mirrored" if done.ok else f"failed: {done.error}"
    return out


def _verdict(registry: Registry, rollout: Rollout, now: datetime, out: Pass) -> Verdict:
    """The judge's verdict on the fleet's statistics. Statistics that cannot be merged at all still let the
    time limit act: past max_seconds the rollout is aborted, else the pass waits. Objects left out (unreadable,
    impossible, odd) are named in the reason."""
    try:
        fleet = collect(registry, rollout, now)
        out.pods = fleet.pods
        return judge(rollout, fleet.candidate, fleet.production, now, pods=fleet.pods, skipped=fleet.skipped)
    except ValueError as e:
        elapsed = (now - datetime.fromisoformat(rollout.started_at)).total_seconds()
        if elapsed >= rollout.thresholds.max_seconds:
            return Verdict("abort", f"no usable statistics after {elapsed:.0f} s: {e}")
        return Verdict("wait", f"statistics cannot be judged yet: {e}")


def judge_all(
    s3: Any, settings: CoreSettings, now: datetime | None = None, deadline: float | None = None
) -> list[Pass]:
    """A pass over every registered model; one model's failure does not stop the others."""
    passes = []
    for name in registrations.models(s3, settings):
        registry = Registry(s3, settings.bucket, name, settings.models_prefix)
        try:
            passes.append(judge_model(registry, now, deadline))
        except Exception as e:  # reported per model; the next pass retries
            log.exception("judging %s failed", name)
            passes.append(Pass(name, action="error", reason=f"{type(e).__name__}: {e}"))
    return passes
