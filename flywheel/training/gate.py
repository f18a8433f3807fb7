"""The promotion gate: beat the naive baseline, do not fall behind production, clear the floors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flywheel.schema import Task

PRIMARY_METRIC: dict[Task, str] = {"regression": "r2", "classification": "balanced_accuracy"}


@dataclass(frozen=True)
class Decision:
    status: Literal["promoted", "rejected"]
    reasons: list[str] = field(default_factory=list)
    primary_metric: str = ""

    @property
    def promoted(self) -> bool:
        return self.status == "promoted"


def decide(
    task: Task,
    candidate: dict[str, float],
    baseline: dict[str, float],
    production: dict[str, float] | None,
    *,
    tolerance: float,
    min_score: float | None = None,
) -> Decision:
    """All scores are on the same holdout; the primary metric is higher-is-better."""
    m = PRIMARY_METRIC[task]
    cand, base = candidate[m], baseline[m]
    failed: list[str] = []
    passed: list[str] = []
    (passed if cand > base else failed).append(f"{m} {cand:.4f} vs naive baseline {base:.4f}")
    if production is not None:
        prod = production[m]
        verdict = cand >= prod - tolerance
        (passed if verdict else failed).append(f"{m} {cand:.4f} vs production {prod:.4f} (tolerance {tolerance:g})")
    if min_score is not None:
        (passed if cand >= min_score else failed).append(f"{m} {cand:.4f} vs floor {min_score:g}")
    if failed:
        return Decision("rejected", [f"failed: {r}" for r in failed] + [f"passed: {r}" for r in passed], m)
    return Decision("promoted", [f"passed: {r}" for r in passed], m)
