"""Where the fleet's live statistics of a rollout meet: one small JSON object per serving process.

Each replica process writes its cumulative per-version statistics of the running rollout to
models/<model>/rollouts/<rollout id>/stats/<pod id>.json every FLYWHEEL_ROLLOUT_PUBLISH_SECONDS, overwriting
its own object only. The judge (a scheduled Lambda in the cloud, `flywheel up`'s worker locally) lists them
and merges them (flywheel/judge.py `merge`). A process that restarts gets a new pod id, so what it counted
before stays counted. The rollout id includes the start time: a new rollout of the same version starts from
zero. Why S3 and not Prometheus: docs/architecture.md, "Rollouts".
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flywheel.judge import VersionStats, merge
from flywheel.registry import Registry, now_iso
from flywheel.rollout import Rollout

log = logging.getLogger(__name__)
MAX_PODS = 1000  # more stats objects than this for one rollout is a fault, not a fleet


def rollout_id(rollout: Rollout) -> str:
    """v<candidate>-<start time, compact>: unique per rollout, stable across pods."""
    stamp = "".join(ch for ch in rollout.started_at if ch.isdigit())
    return f"v{rollout.candidate}-{stamp}"


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
    """(candidate, production, pods): every pod's statistics of `rollout`, merged. An unreadable object is
    skipped with a warning (a pod mid-write, a stray file): it cannot block the judge."""
    prefix = stats_prefix(registry, rollout)
    keys: list[str] = []
    for page in registry.s3.get_paginator("list_objects_v2").paginate(Bucket=registry.bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
    if len(keys) > MAX_PODS:
        raise ValueError(f"{len(keys)} statistics objects under {prefix}: more than {MAX_PODS} pods")
    cands, prods = [], []
    for key in keys:
        try:
            doc: dict[str, Any] = json.loads(registry.s3.get_object(Bucket=registry.bucket, Key=key)["Body"].read())
            cand, prod = VersionStats.from_dict(doc["candidate"]), VersionStats.from_dict(doc["production"])
        except (ValueError, KeyError, TypeError) as e:
            log.warning("skipping unreadable rollout statistics %s: %s", key, e)
            continue
        cands.append(cand)
        prods.append(prod)
    return merge(cands), merge(prods), len(cands)
