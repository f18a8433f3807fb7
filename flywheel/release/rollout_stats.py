"""Where the fleet's live statistics of a rollout meet: one small JSON object per serving process.

Each replica process writes its cumulative per-version statistics of the running rollout to
models/<model>/rollouts/<rollout id>/stats/<pod id>.json every FLYWHEEL_ROLLOUT_PUBLISH_SECONDS, overwriting
its own object only. The judge (a scheduled Lambda in the cloud, `flywheel up`'s worker locally) lists them
and merges them (flywheel/release/judge.py `merge`). A process that restarts gets a new pod id, so what it counted
before stays counted. Each rollout has its own id (rollout.json `id`): a new rollout of the same version starts from
zero. Why S3 and not Prometheus: docs/architecture.md, "Rollouts".
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from flywheel.clock import now_iso
from flywheel.registry.store import Registry
from flywheel.release.judge import VersionStats, merge
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


def publish(registry: Registry, rollout: Rollout, pod: str, production: VersionStats, candidate: VersionStats) -> None:
    """Overwrite this pod's statistics of `rollout` (cumulative since the pod joined it)."""
    doc = {
        "pod": pod,
        "model": registry.name,
        "rollout": rollout_id(rollout),
        "candidate_version": rollout.candidate,
        "baseline_version": rollout.baseline,
        "updated_at": now_iso(),
        "production": production.to_dict(),
        "candidate": candidate.to_dict(),
    }
    registry.s3.put_object(
        Bucket=registry.bucket,
        Key=stats_prefix(registry, rollout) + f"{pod}.json",
        Body=json.dumps(doc, allow_nan=False).encode(),
        ContentType="application/json",
    )


def gather(registry: Registry, rollout: Rollout) -> tuple[VersionStats, VersionStats, int]:
    """(candidate, production, pods): every pod's statistics of `rollout`, merged.

    Each object is untrusted input: one that is too big, unreadable or impossible (judge.VersionStats.check) is
    skipped with a warning, and so are pods whose histograms are shaped unlike the majority's (an old image
    during a rolling deploy): no object can stop the judge, so a rollout still reaches its time limit."""
    prefix = stats_prefix(registry, rollout)
    listed: list[dict[str, Any]] = []
    for page in registry.s3.get_paginator("list_objects_v2").paginate(Bucket=registry.bucket, Prefix=prefix):
        listed += [o for o in page.get("Contents", []) if o["Key"].endswith(".json")]
    if len(listed) > MAX_PODS:
        log.warning("%d statistics objects under %s: judging the newest %d", len(listed), prefix, MAX_PODS)
        listed = sorted(listed, key=lambda o: o["LastModified"])[-MAX_PODS:]
    pods: list[tuple[VersionStats, VersionStats]] = []
    for obj in listed:
        key = obj["Key"]
        if int(obj.get("Size", 0)) > MAX_OBJECT_BYTES:
            log.warning("skipping rollout statistics %s: %d bytes > %d", key, obj["Size"], MAX_OBJECT_BYTES)
            continue
        try:
            doc = json.loads(registry.s3.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
            pods.append((VersionStats.from_dict(doc["candidate"]), VersionStats.from_dict(doc["production"])))
        except Exception as e:  # any malformed object: skipped, never fatal to the pass
            log.warning("skipping unreadable rollout statistics %s: %s: %s", key, type(e).__name__, e)
    pods = _majority(pods, prefix)
    return merge(c for c, _ in pods), merge(p for _, p in pods), len(pods)


def _shape(stats: VersionStats) -> tuple[tuple[float, ...], int]:
    return tuple(le for le, _ in stats.latency_buckets), len(stats.prediction_counts)


def _majority(pods: list[tuple[VersionStats, VersionStats]], prefix: str) -> list[tuple[VersionStats, VersionStats]]:
    """The pods whose histograms have the most common shape (empty histograms fit any)."""
    shapes = Counter(s for c, p in pods for s in (_shape(c), _shape(p)) if s != ((), 0))
    if len(shapes) <= 1:
        return pods
    (common, _), *_ = shapes.most_common(1)
    kept = [(c, p) for c, p in pods if all(_shape(x) in (common, ((), 0)) for x in (c, p))]
    log.warning("%s: %d pods report histograms shaped unlike the others; judged without them",
                prefix, len(pods) - len(kept))  # fmt: skip
    return kept
