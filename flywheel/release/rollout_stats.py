"""Where the fleet's live statistics of a rollout meet: one small JSON object per serving process.

Each replica process writes its cumulative per-version statistics of the running rollout to
models/<model>/rollouts/<rollout id>/stats/<pod id>.json every FLYWHEEL_ROLLOUT_PUBLISH_SECONDS, overwriting
its own object only. The judge (a scheduled Lambda in the cloud, `flywheel up`'s worker locally) lists them
and merges them (flywheel/release/judge.py `merge`). A process that restarts gets a new pod id, so what it counted
before stays counted. Each rollout has its own id (rollout.json `id`): a new rollout of the same version starts from
zero. Why S3 and not Prometheus: docs/architecture.md, "Rollouts".

Anyone who can write under the stats/ prefix can plant an object, so the judge believes none blindly: objects
that are too big, unreadable, impossible (flywheel/release/pod_reports.py: more requests than a process could run
in the time, timestamps out of order) or shaped unlike the majority are left out, logged, and named in the
verdict's reason (`collect`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flywheel.clock import now_iso
from flywheel.registry.store import Registry
from flywheel.release.judge import VersionStats, merge
from flywheel.release.pod_reports import PodReport, screen
from flywheel.release.rollout_state import Rollout

log = logging.getLogger(__name__)
MAX_PODS = 1000  # more stats objects than this for one rollout is a fault, not a fleet
MAX_OBJECT_BYTES = 64 * 1024  # one pod's figures are about 2 KB


def rollout_id(rollout: Rollout) -> str:
    """v<candidate>-<the rollout's own id>: unique per rollout, stable across pods (a rollout written before
    rollouts had ids: its start time)."""
    suffix = rollout.id or "".join(ch for ch in rollout.started_at if ch.isdigit())
    return f"v{rollout.candidate}-{suffix}"


def stats_prefix(registry: Registry, rollout: Rollout) -> str:
    return f"{registry.root}rollouts/{rollout_id(rollout)}/stats/"


def publish(
    registry: Registry,
    rollout: Rollout,
    pod: str,
    production: VersionStats,
    candidate: VersionStats,
    *,
    started_at: str | None = None,
) -> None:
    """Overwrite this pod's statistics of `rollout` (cumulative since the pod joined it, at `started_at`: the
    judge bounds the counts by the time since; objects without it are bounded from the rollout's start)."""
    doc: dict[str, Any] = {
        "pod": pod,
        "model": registry.name,
        "rollout": rollout_id(rollout),
        "candidate_version": rollout.candidate,
        "baseline_version": rollout.baseline,
        "updated_at": now_iso(),
        "production": production.to_dict(),
        "candidate": candidate.to_dict(),
    }
    if started_at is not None:
        doc["started_at"] = started_at
    registry.s3.put_object(
        Bucket=registry.bucket,
        Key=stats_prefix(registry, rollout) + f"{pod}.json",
        Body=json.dumps(doc, allow_nan=False).encode(),
        ContentType="application/json",
    )


@dataclass(frozen=True)
class Fleet:
    """The pods' statistics of a rollout as the judge takes them: merged per version over the `pods` whose objects
    were kept, and one sentence per object left out ("skipped stats/<pod>.json: <why>")."""

    candidate: VersionStats
    production: VersionStats
    pods: int
    skipped: tuple[str, ...] = ()


def collect(registry: Registry, rollout: Rollout, now: datetime | None = None) -> Fleet:
    """Every pod's statistics of `rollout`, checked and merged.

    Each object is untrusted input: one that is too big, unreadable or impossible (judge.VersionStats.check,
    pod_reports.screen against `now`) is skipped with a warning, and so are pods whose histograms are shaped unlike the
    majority's (an old image during a rolling deploy): no object can stop the judge, so a rollout still reaches
    its time limit, and none can carry a decision on figures that cannot be true."""
    now = now or datetime.now(UTC)
    prefix = stats_prefix(registry, rollout)
    listed: list[dict[str, Any]] = []
    for page in registry.s3.get_paginator("list_objects_v2").paginate(Bucket=registry.bucket, Prefix=prefix):
        listed += [o for o in page.get("Contents", []) if o["Key"].endswith(".json")]
    if len(listed) > MAX_PODS:
        log.warning("%d statistics objects under %s: judging the newest %d", len(listed), prefix, MAX_PODS)
        listed = sorted(listed, key=lambda o: o["LastModified"])[-MAX_PODS:]
    reports: list[PodReport] = []
    skipped: list[str] = []
    for obj in listed:
        key = obj["Key"]
        name = "stats/" + key[len(prefix) :]
        if int(obj.get("Size", 0)) > MAX_OBJECT_BYTES:
            skipped.append(f"skipped {name}: {obj['Size']} bytes > {MAX_OBJECT_BYTES}")
            continue
        try:
            doc = json.loads(registry.s3.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
            reports.append(PodReport.from_dict(name, doc))
        except Exception as e:  # any malformed object: skipped, never fatal to the pass
            skipped.append(f"skipped {name}: unreadable: {type(e).__name__}: {e}")
    reports, implausible = screen(rollout, reports, now)
    reports, odd = _majority(reports)
    skipped += implausible + odd
    for note in skipped:
        log.warning("rollout statistics of %s v%s (%s): %s", registry.name, rollout.candidate, prefix, note)
    return Fleet(
        candidate=merge(r.candidate for r in reports),
        production=merge(r.production for r in reports),
        pods=len(reports),
        skipped=tuple(skipped),
    )


def gather(registry: Registry, rollout: Rollout, now: datetime | None = None) -> tuple[VersionStats, VersionStats, int]:
    """(candidate, production, pods): `collect` without the skipped objects' names."""
    fleet = collect(registry, rollout, now)
    return fleet.candidate, fleet.production, fleet.pods


def _shape(stats: VersionStats) -> tuple[tuple[float, ...], int]:
    return tuple(le for le, _ in stats.latency_buckets), len(stats.prediction_counts)


def _majority(pods: list[PodReport]) -> tuple[list[PodReport], list[str]]:
    """The pods whose histograms have the most common shape (empty histograms fit any), and a note per other."""
    shapes = Counter(s for p in pods for s in (_shape(p.candidate), _shape(p.production)) if s != ((), 0))
    if len(shapes) <= 1:
        return pods, []
    (common, _), *_ = shapes.most_common(1)
    fits = [all(_shape(x) in (common, ((), 0)) for x in (p.candidate, p.production)) for p in pods]
    odd = [f"skipped {p.name}: histograms shaped unlike the other pods'" for p, ok in zip(pods, fits, strict=True)
           if not ok]  # fmt: skip
    return [p for p, ok in zip(pods, fits, strict=True) if ok], odd
