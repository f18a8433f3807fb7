"""What the CLI's `flywheel rollout status` and the UI's models page show of a model's rollout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flywheel.registry import history
from flywheel.release.judge import judge
from flywheel.release.rollout_state import load, production_moved
from flywheel.release.rollout_stats import collect


def figures(stats: Any) -> dict[str, Any]:
    """One version's merged statistics as shown: counts, error rate, p99 in ms, shadow comparison figures."""
    p99 = stats.p99()
    compared = stats.compared
    return {
        "requests": stats.requests,
        "errors": stats.errors,
        "error_rate": stats.error_rate,
        "p99_ms": None if p99 is None else p99 * 1000,
        "compared": compared,
        "agreement": stats.agreed / compared if compared and stats.agreed is not None else None,
        "mean_relative_difference": (
            stats.relative_difference_sum / compared if compared and stats.relative_difference_sum is not None else None
        ),
    }


def snapshot(reg: Any, now: datetime | None = None) -> dict[str, Any] | None:
    """The model's rollout (None when it never had one) with the fleet's statistics, what the judge would decide
    now (running rollouts only; nothing is recorded) and the candidate's history. JSON-safe."""
    found = load(reg)
    if found is None:
        return None
    rollout, _ = found
    out: dict[str, Any] = {"model": reg.name, "rollout": rollout.to_dict(), "pods": 0, "candidate": None,
                           "production": None, "verdict": None, "problem": None}  # fmt: skip
    try:
        at = now or datetime.now(UTC)
        fleet = collect(reg, rollout, at)
        cand, prod, out["pods"] = fleet.candidate, fleet.production, fleet.pods
        out["candidate"], out["production"] = figures(cand), figures(prod)
        moved = production_moved(reg, rollout) if rollout.running else ""
        if moved:  # what the next judge pass does
            out["verdict"] = {"action": "abort", "reason": moved, "figures": {}}
        elif rollout.running:
            verdict = judge(rollout, cand, prod, at, pods=fleet.pods, skipped=fleet.skipped)
            out["verdict"] = {"action": verdict.action, "reason": verdict.reason, "figures": verdict.figures}
    except Exception as e:  # shown, not raised: the page and `status` must render whatever a pod wrote
        out["problem"] = str(e)
    out["history"] = history.events(reg, rollout.candidate)
    return out
