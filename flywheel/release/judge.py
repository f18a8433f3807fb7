"""The rollout judge: promote, abort or wait, from the candidate's and production's live statistics.

Pure: no I/O and no clock. The caller gathers each pod's per-version statistics, merges them (`merge`), and
records the verdict with flywheel/release/rollout_state.py's `decide`. The rules are in docs/rollouts.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from flywheel.release.rollout_state import Rollout
from flywheel.training.drift import psi

Action = Literal["promote", "abort", "wait"]
P99 = 0.99
#: Skipped statistics objects named in a verdict's reason; the rest are counted (and every one is logged).
NAMED_SKIPS = 5


@dataclass(frozen=True)
class VersionStats:
    """One version's live statistics over a rollout, from one pod or merged across pods.

    latency_buckets: Prometheus-style cumulative counts, (upper bound in seconds, requests <= bound), sorted,
    the last bound math.inf. prediction_counts: requests per prediction bin (a class, or a range of a
    regression output), the same bins for both versions. Shadow mode, on the candidate's stats: `compared`
    requests run by both versions, and either `agreed` (classification: same label) or
    `relative_difference_sum` (regression: sum of |cand - prod| / max(|prod|, eps)).
    """

    requests: int = 0
    errors: int = 0
    latency_buckets: tuple[tuple[float, int], ...] = ()
    prediction_counts: tuple[int, ...] = ()
    compared: int = 0
    agreed: int | None = None
    relative_difference_sum: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float | None:
        """p99 latency in seconds from the buckets, as Prometheus' histogram_quantile computes it."""
        return quantile(P99, self.latency_buckets)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (the infinite bound is written "+Inf", as Prometheus labels it)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_buckets": [["+Inf" if math.isinf(le) else le, n] for le, n in self.latency_buckets],
            "prediction_counts": list(self.prediction_counts),
            "compared": self.compared,
            "agreed": self.agreed,
            "relative_difference_sum": self.relative_difference_sum,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> VersionStats:
        """Read and check one pod's figures: a statistics object is written by a replica, so it is untrusted
        input to a decision. ValueError names what is impossible (negative or non-finite counts, more errors
        than requests, buckets that decrease, more agreements than comparisons, a difference out of range)."""
        stats = cls(
            requests=_count(doc.get("requests", 0), "requests"),
            errors=_count(doc.get("errors", 0), "errors"),
            latency_buckets=tuple(
                (_bound(le), _count(n, "latency bucket")) for le, n in doc.get("latency_buckets", [])
            ),
            prediction_counts=tuple(_count(n, "prediction count") for n in doc.get("prediction_counts", [])),
            compared=_count(doc.get("compared", 0), "compared"),
            agreed=None if doc.get("agreed") is None else _count(doc["agreed"], "agreed"),
            relative_difference_sum=(
                None if doc.get("relative_difference_sum") is None else float(doc["relative_difference_sum"])
            ),
        )
        stats.check()
        return stats

    def check(self) -> None:
        if self.errors > self.requests:
            raise ValueError(f"{self.errors} errors > {self.requests} requests")
        bounds = [le for le, _ in self.latency_buckets]
        counts = [n for _, n in self.latency_buckets]
        if bounds != sorted(set(bounds)) or counts != sorted(counts):
            raise ValueError("latency buckets must have increasing bounds and non-decreasing cumulative counts")
        if counts and counts[-1] > self.requests:
            raise ValueError(f"{counts[-1]} latency observations > {self.requests} requests")
        if self.agreed is not None and self.agreed > self.compared:
            raise ValueError(f"{self.agreed} agreements > {self.compared} comparisons")
        diff = self.relative_difference_sum
        if diff is not None and not (math.isfinite(diff) and 0 <= diff <= 2 * self.compared):
            raise ValueError(f"relative difference sum {diff} outside [0, 2 x {self.compared} comparisons]")


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number: {value!r}")
    if value < 0 or value != int(value):
        raise ValueError(f"{what} is not a count: {value!r}")
    return int(value)


def _bound(value: Any) -> float:
    le = math.inf if value == "+Inf" else float(value)
    if math.isnan(le) or le <= 0:
        raise ValueError(f"latency bound {value!r} is not a positive number")
    return le


@dataclass(frozen=True)
class Verdict:
    """What the judge decided and why; `figures` are the numbers it compared, for the record and the UI."""

    action: Action
    reason: str
    figures: dict[str, float] = field(default_factory=dict)


def quantile(q: float, buckets: Iterable[tuple[float, int]]) -> float | None:
    """histogram_quantile over cumulative buckets: linear within the bucket holding the rank; a rank in the
    +Inf bucket gives the highest finite bound. None when there are no observations."""
    pairs = sorted(buckets)
    if not pairs or pairs[-1][1] <= 0:
        return None
    rank = q * pairs[-1][1]
    lower, below = 0.0, 0
    for le, count in pairs:
        if count >= rank:
            if math.isinf(le):
                return lower
            inside = count - below
            return le if inside <= 0 else lower + (le - lower) * (rank - below) / inside
        lower, below = le, count
    return lower


def merge(stats: Iterable[VersionStats]) -> VersionStats:
    """Several pods' statistics of one version as one: counts summed, histograms summed bucket by bucket.

    Pods must use the same latency bounds and prediction bins (ValueError otherwise); a pod with no
    histogram yet (empty) adds nothing to it.
    """
    items = list(stats)
    bounds = {tuple(le for le, _ in s.latency_buckets) for s in items if s.latency_buckets}
    if len(bounds) > 1:
        raise ValueError(f"pods report different latency buckets: {sorted(bounds)}")
    widths = {len(s.prediction_counts) for s in items if s.prediction_counts}
    if len(widths) > 1:
        raise ValueError(f"pods report different numbers of prediction bins: {sorted(widths)}")
    kinds = {(s.agreed is not None, s.relative_difference_sum is not None) for s in items if s.compared}
    if len(kinds) > 1:
        raise ValueError("pods report both classification agreement and regression differences")
    latency: tuple[tuple[float, int], ...] = ()
    if bounds:
        (les,) = bounds
        totals = np.sum([[n for _, n in s.latency_buckets] for s in items if s.latency_buckets], axis=0)
        latency = tuple((le, int(n)) for le, n in zip(les, totals, strict=True))
    predictions: tuple[int, ...] = ()
    if widths:
        predictions = tuple(int(n) for n in np.sum([s.prediction_counts for s in items if s.prediction_counts], axis=0))
    agreed = [s.agreed for s in items if s.agreed is not None]
    differences = [s.relative_difference_sum for s in items if s.relative_difference_sum is not None]
    return VersionStats(
        requests=sum(s.requests for s in items),
        errors=sum(s.errors for s in items),
        latency_buckets=latency,
        prediction_counts=predictions,
        compared=sum(s.compared for s in items),
        agreed=sum(agreed) if agreed else None,
        relative_difference_sum=float(sum(differences)) if differences else None,
    )


def judge(
    rollout: Rollout,
    candidate: VersionStats,
    production: VersionStats,
    now: datetime,
    *,
    pods: int = 1,
    skipped: Sequence[str] = (),
) -> Verdict:
    """Promote when every threshold holds on a sufficient sample; abort when one is broken, or when
    max_seconds passed without a sufficient sample; wait otherwise. `now` must be timezone-aware.

    `pods`: how many processes' figures were merged into `candidate` and `production` (min_pods); `skipped`: the
    statistics objects left out (pod_reports.screen, or unreadable), named at the end of the reason."""
    verdict = _judge(rollout, candidate, production, now, pods)
    if not skipped:
        return verdict
    named = "; ".join(note if len(note) <= 240 else note[:239] + "…" for note in skipped[:NAMED_SKIPS])
    more = f"; and {len(skipped) - NAMED_SKIPS} more statistics objects skipped" if len(skipped) > NAMED_SKIPS else ""
    return Verdict(verdict.action, f"{verdict.reason}; {named}{more}", verdict.figures)


def _judge(rollout: Rollout, candidate: VersionStats, production: VersionStats, now: datetime, pods: int) -> Verdict:
    if not rollout.running:
        raise ValueError(f"the rollout of v{rollout.candidate} is already {rollout.status}")
    t = rollout.thresholds
    elapsed = (now - datetime.fromisoformat(rollout.started_at)).total_seconds()
    missing = _missing_sample(rollout, candidate, production, elapsed, pods)
    if missing:
        if elapsed >= t.max_seconds:
            return Verdict("abort", f"no verdict after {elapsed:.0f} s >= max_seconds {t.max_seconds:g}: {missing}")
        return Verdict("wait", missing)
    figures, broken = _check(rollout, candidate, production)
    if broken:
        return Verdict("abort", "; ".join(broken), figures)
    held = ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
    sample = f"{candidate.requests} requests in {elapsed:.0f} s"
    return Verdict("promote", f"all thresholds held over {sample}: {held}", figures)


def _missing_sample(rollout: Rollout, cand: VersionStats, prod: VersionStats, elapsed: float, pods: int) -> str:
    """Why the evidence is not yet enough to judge on ("" when it is)."""
    t = rollout.thresholds
    if cand.requests < t.min_requests:
        return f"candidate has {cand.requests} requests < min_requests {t.min_requests}"
    if prod.requests < t.min_requests:
        return f"production has {prod.requests} requests < min_requests {t.min_requests}"
    if rollout.mode == "shadow" and cand.compared < t.min_requests:
        return f"{cand.compared} shadow comparisons < min_requests {t.min_requests}"
    if pods < t.min_pods:  # after the counts: with the default of 1, a sample always has a pod
        return f"{pods} pods published usable statistics < min_pods {t.min_pods}"
    if elapsed < t.min_seconds:
        return f"{elapsed:.0f} s since the start < min_seconds {t.min_seconds:g}"
    if cand.p99() is None or prod.p99() is None:
        return "no latency histogram for " + ("the candidate" if cand.p99() is None else "production")
    if not cand.prediction_counts or not prod.prediction_counts:
        return "no prediction histogram for " + ("the candidate" if not cand.prediction_counts else "production")
    if rollout.mode == "shadow" and cand.agreed is None and cand.relative_difference_sum is None:
        return "shadow comparisons carry neither agreement nor relative difference"
    return ""


def _check(rollout: Rollout, cand: VersionStats, prod: VersionStats) -> tuple[dict[str, float], list[str]]:
    """The figures compared, and one sentence per broken threshold naming the figure and the threshold."""
    t = rollout.thresholds
    figures: dict[str, float] = {}
    broken: list[str] = []
    increase = cand.error_rate - prod.error_rate
    figures["error_rate_increase"] = increase
    if increase > t.max_error_rate_increase:
        broken.append(
            f"error rate {cand.error_rate:.2%} vs production {prod.error_rate:.2%}: "
            f"+{increase:.2%} > max_error_rate_increase {t.max_error_rate_increase:.2%}"
        )
    cand_p99, prod_p99 = cand.p99() or 0.0, prod.p99() or 0.0
    ratio = cand_p99 / prod_p99 if prod_p99 > 0 else (1.0 if cand_p99 == 0 else math.inf)
    figures["p99_ratio"] = ratio
    if ratio > t.max_p99_ratio:
        broken.append(
            f"p99 latency {cand_p99 * 1000:.1f} ms vs production {prod_p99 * 1000:.1f} ms: "
            f"ratio {ratio:.2f} > max_p99_ratio {t.max_p99_ratio:g}"
        )
    if len(cand.prediction_counts) != len(prod.prediction_counts):
        raise ValueError(
            f"prediction histograms differ in bins: candidate {len(cand.prediction_counts)}, "
            f"production {len(prod.prediction_counts)}"
        )
    expected = np.asarray(prod.prediction_counts, dtype="float64")
    actual = np.asarray(cand.prediction_counts, dtype="float64")
    shift = psi(expected / max(expected.sum(), 1), actual / max(actual.sum(), 1))
    figures["psi"] = shift
    if shift > t.max_psi:
        broken.append(f"prediction PSI vs production {shift:.3f} > max_psi {t.max_psi:g}")
    if rollout.mode == "shadow":
        if cand.agreed is not None:
            agreement = cand.agreed / cand.compared
            figures["agreement"] = agreement
            if agreement < t.min_agreement:
                broken.append(
                    f"agreement with production {agreement:.2%} over {cand.compared} requests "
                    f"< min_agreement {t.min_agreement:.2%}"
                )
        elif cand.relative_difference_sum is not None:
            mean = cand.relative_difference_sum / cand.compared
            figures["relative_difference"] = mean
            if mean > t.max_relative_difference:
                broken.append(
                    f"mean relative difference from production {mean:.3f} over {cand.compared} requests "
                    f"> max_relative_difference {t.max_relative_difference:g}"
                )
    return figures, broken
