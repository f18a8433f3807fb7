"""Rollout actions shared by the trainer, the judge, the CLI and the UI: begin, promote, abort, settle.

Order on promotion: the decision is recorded on rollout.json first (CAS), then the production alias moves
(CAS). A run that dies in between leaves a promoted rollout whose candidate is not in production; `settle`
(run by every judge pass) completes the move, unless someone moved production meanwhile, whose choice then
stands. Every decision is also appended to the candidate's history (flywheel/registry/history.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from flywheel.errors import ConflictError, NotFound
from flywheel.registry import history
from flywheel.registry.store import Registry
from flywheel.release.rollout_state import (
    DEFAULT_MODES,
    Mode,
    Rollout,
    Status,
    Thresholds,
    check_mode,
    check_share,
    decide,
    load,
    start,
)
from flywheel.storage import is_missing

JUDGE = "judge"
log = logging.getLogger(__name__)


def _record(registry: Registry, version: int, what: str, who: str, reason: str, **extra: Any) -> None:
    """Append to the version's history; best effort. The decision itself is already in rollout.json (with its own
    history), and in the cloud the bucket policy lets only the judge's and the UI's roles write a version's
    history: an operator's own credentials (`flywheel rollout abort`) may be refused, which must not undo or hide
    a decision that stands."""
    try:
        history.record(registry, version, what, who, reason, **extra)
    except (ClientError, BotoCoreError) as e:
        log.warning("v%s of %s: %s recorded in rollout.json, not in the version's history: %s",
                    version, registry.name, what, e)  # fmt: skip


@dataclass(frozen=True)
class Policy:
    """How a model's approved versions reach production: the deployment default, or the model's own
    (models/<model>/rollout-policy.json, set with `flywheel rollout policy`)."""

    mode: str = "direct"
    share: float = 0.1
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        check_mode(self.mode, DEFAULT_MODES)
        check_share(self.share)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "share": self.share, "thresholds": asdict(self.thresholds)}


def policy_key(registry: Registry) -> str:
    return f"{registry.root}rollout-policy.json"


def policy(registry: Registry, default_mode: str, default_share: float) -> Policy:
    """The model's policy, or the deployment's defaults when it has none."""
    try:
        doc = json.loads(registry.s3.get_object(Bucket=registry.bucket, Key=policy_key(registry))["Body"].read())
    except ClientError as e:
        if is_missing(e):
            return Policy(default_mode, default_share)
        raise
    return Policy(
        str(doc.get("mode", default_mode)),
        float(doc.get("share", default_share)),
        Thresholds.from_dict(doc.get("thresholds") or {}),
    )


def set_policy(registry: Registry, new: Policy) -> None:
    registry.s3.put_object(
        Bucket=registry.bucket,
        Key=policy_key(registry),
        Body=json.dumps(new.to_dict()).encode(),
        ContentType="application/json",
    )


def begin(
    registry: Registry,
    candidate: int,
    *,
    actor: str,
    mode: str,
    share: float,
    thresholds: Thresholds | None = None,
) -> Rollout:
    """Start a rollout of `candidate` against the version production serves now."""
    check_mode(mode, DEFAULT_MODES[1:])
    alias = registry.alias()
    if alias is None:
        raise ConflictError(f"{registry.name!r} has no production version: a first version goes straight to it")
    if alias.version == candidate:
        raise ConflictError(f"v{candidate} of {registry.name!r} is already in production")
    rollout, _ = start(
        registry,
        candidate=candidate,
        baseline=alias.version,
        mode=cast(Mode, mode),
        share=share,
        actor=actor,
        thresholds=thresholds,
    )
    _record(registry, candidate, "rollout-started", actor, rollout.history[0].reason, mode=mode, share=share)
    return rollout


def _running(registry: Registry, expected_candidate: int | None, expected_etag: str | None) -> tuple[Rollout, str]:
    found = load(registry)
    if found is None or not found[0].running:
        raise NotFound(f"model {registry.name!r} has no running rollout")
    rollout, etag = found
    if expected_candidate is not None and rollout.candidate != expected_candidate:
        raise ConflictError(
            f"the running rollout of {registry.name!r} is of v{rollout.candidate}, not v{expected_candidate}"
        )
    if expected_etag is not None and etag != expected_etag:  # the judge decides on the rollout it judged
        raise ConflictError(f"the rollout of {registry.name!r} changed since it was judged; the next pass re-judges")
    return rollout, etag


def promote(
    registry: Registry,
    *,
    actor: str,
    reason: str,
    expected_candidate: int | None = None,
    expected_etag: str | None = None,
    figures: Mapping[str, float] | None = None,
) -> Rollout:
    """Record "promoted", then move production to the candidate (CAS from the baseline). `expected_*`:
    act only on that very rollout (ConflictError otherwise)."""
    decided = _decide(registry, "promoted", actor, reason, expected_candidate, expected_etag, figures)
    settle(registry, decided)
    return decided


def abort(
    registry: Registry,
    *,
    actor: str,
    reason: str,
    expected_candidate: int | None = None,
    expected_etag: str | None = None,
    figures: Mapping[str, float] | None = None,
) -> Rollout:
    """Record "aborted": replicas drop the candidate, production never moved. `expected_*`: as `promote`."""
    return _decide(registry, "aborted", actor, reason, expected_candidate, expected_etag, figures)


def _decide(
    registry: Registry,
    status: Status,
    actor: str,
    reason: str,
    expected_candidate: int | None,
    expected_etag: str | None,
    figures: Mapping[str, float] | None,
) -> Rollout:
    rollout, etag = _running(registry, expected_candidate, expected_etag)
    decided, _ = decide(registry, rollout, etag, status=status, actor=actor, reason=reason)
    _record(registry, rollout.candidate, f"rollout-{status}", actor, reason, figures=dict(figures or {}))
    return decided


def settle(registry: Registry, rollout: Rollout) -> str:
    """Complete a promoted rollout's alias move if it has not happened; a note on what was done."""
    if rollout.status != "promoted":
        return ""
    alias = registry.alias()
    if alias is not None and alias.version == rollout.candidate:
        return f"production already v{rollout.candidate}"
    if alias is None or alias.version != rollout.baseline:
        where = f"v{alias.version} by {alias.doc.get('updated_by')}" if alias else "nowhere"
        return f"production moved to {where} after the rollout began: left there"
    if str(alias.doc.get("updated_at", "")) > str(rollout.decided_at or ""):
        # production was moved (back) to the baseline after the decision: a rollback, whose choice stands
        return f"production moved back to v{alias.version} by {alias.doc.get('updated_by')} after the promotion"
    try:
        registry.move_alias(rollout.candidate, alias, actor=rollout.decided_by or JUDGE,
                            reason=f"rollout promoted: {rollout.reason}")  # fmt: skip
    except ConflictError:
        return "production moved meanwhile: left there"
    return f"production v{rollout.baseline} -> v{rollout.candidate}"
