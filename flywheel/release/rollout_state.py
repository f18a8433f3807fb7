"""The rollout state of one model: a candidate judged on live traffic beside production (issue 14).

Stored at models/<model>/rollout.json, beside the production alias and written by the same compare-and-swap
rules: created with IfNoneMatch="*", changed with IfMatch=<the ETag read>. A writer that lost the race gets
ConflictError and must re-read. A finished rollout (promoted or aborted) stays in place until the next one
replaces it. Moving the production alias on "promoted" is the caller's job
(flywheel/registry/operator_actions.py), not this module's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, cast, get_args

from botocore.exceptions import ClientError

from flywheel.clock import now_iso
from flywheel.errors import ConflictError
from flywheel.registry.store import Registry
from flywheel.storage import is_missing, is_not_modified

Mode = Literal["shadow", "canary"]
Status = Literal["running", "promoted", "aborted"]
MODES: tuple[str, ...] = get_args(Mode)
DEFAULT_MODES = ("direct", *MODES)
HISTORY_LIMIT = 20  # the state file stays small; the full record belongs in the version's history


@dataclass(frozen=True)
class Thresholds:
    """What the judge requires of a candidate before promoting it (flywheel/release/judge.py; docs/rollouts.md)."""

    min_requests: int = 500  # requests the candidate served (canary) or ran on (shadow) before any verdict
    min_seconds: float = 300  # seconds after the start before any verdict, so a traffic pattern shows
    max_seconds: float = 3600  # a rollout still without a sample this long after its start is aborted
    max_error_rate_increase: float = 0.01  # candidate error rate minus production's, as a fraction (1 point)
    max_p99_ratio: float = 1.5  # candidate p99 latency / production p99 latency
    max_psi: float = 0.25  # PSI of the candidate's prediction histogram against production's
    min_agreement: float = 0.95  # shadow, classification: share of requests where both predict the same label
    max_relative_difference: float = 0.1  # shadow, regression: mean |cand - prod| / max(|prod|, eps)
    #: processes whose statistics must be counted before any verdict: set it to the replicas that serve, so that
    #: one object (a single pod, or one planted under stats/) cannot carry the decision alone
    min_pods: int = 1

    def __post_init__(self) -> None:
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be >= 1, not {self.min_requests}")
        if self.min_pods < 1:
            raise ValueError(f"min_pods must be >= 1, not {self.min_pods}")
        if not 0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 <= min_seconds <= max_seconds, not {self.min_seconds}, {self.max_seconds}")
        if self.max_error_rate_increase < 0 or self.max_psi < 0 or self.max_relative_difference < 0:
            raise ValueError("max_error_rate_increase, max_psi and max_relative_difference must be >= 0")
        if self.max_p99_ratio <= 0:
            raise ValueError(f"max_p99_ratio must be > 0, not {self.max_p99_ratio}")
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement must be within [0, 1], not {self.min_agreement}")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Thresholds:
        """Known keys only: a file written by a newer version with extra thresholds still loads."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass(frozen=True)
class Event:
    """One line of a rollout's history."""

    what: str  # started | promoted | aborted
    who: str
    when: str
    reason: str = ""


@dataclass(frozen=True)
class Rollout:
    """A candidate version served beside production, and what became of it."""

    model: str
    candidate: int
    baseline: int  # the production version when the rollout started
    mode: Mode
    share: float  # canary: share of requests the candidate answers; shadow: share of requests it also runs on
    started_at: str
    started_by: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    status: Status = "running"
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str = ""
    history: tuple[Event, ...] = ()
    id: str = ""  # unique per rollout (a restart of the same candidate is a new rollout with new statistics)

    def __post_init__(self) -> None:
        check_mode(self.mode, MODES)
        check_share(self.share)
        if self.status not in get_args(Status):
            raise ValueError(f"rollout status must be one of {get_args(Status)}, not {self.status!r}")
        if self.candidate == self.baseline:
            raise ValueError(f"the candidate v{self.candidate} is already the baseline")

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Rollout:
        return cls(
            model=str(doc["model"]),
            candidate=int(doc["candidate"]),
            baseline=int(doc["baseline"]),
            mode=cast(Mode, doc["mode"]),
            share=float(doc["share"]),
            started_at=str(doc["started_at"]),
            started_by=str(doc.get("started_by", "")),
            thresholds=Thresholds.from_dict(doc.get("thresholds") or {}),
            status=cast(Status, doc.get("status", "running")),
            decided_by=doc.get("decided_by"),
            decided_at=doc.get("decided_at"),
            reason=str(doc.get("reason", "")),
            history=tuple(Event(**e) for e in doc.get("history", [])),
            id=str(doc.get("id", "")),
        )


def check_mode(mode: str, allowed: tuple[str, ...]) -> None:
    if mode not in allowed:
        raise ValueError(f"rollout mode must be one of {', '.join(allowed)}, not {mode!r}")


def check_share(share: float) -> None:
    if not 0 < share <= 1:
        raise ValueError(f"rollout share must be within (0, 1], not {share}")


# -- the state file ------------------------------------------------------------------------------------
def rollout_key(registry: Registry) -> str:
    return f"{registry.root}rollout.json"


def load(registry: Registry) -> tuple[Rollout, str] | None:
    """The model's rollout (running or finished) and the ETag needed to change it; None when there is none."""
    return load_if_changed(registry, None)[1]


def load_if_changed(registry: Registry, etag: str | None) -> tuple[bool, tuple[Rollout, str] | None]:
    """(changed, what `load` gives) with a conditional GET: (False, None) while the file still has `etag`, as
    the replicas poll it beside the production alias (Registry.alias_if_changed)."""
    kwargs: dict[str, Any] = {"Bucket": registry.bucket, "Key": rollout_key(registry)}
    if etag:
        kwargs["IfNoneMatch"] = etag
    try:
        obj = registry.s3.get_object(**kwargs)
    except ClientError as e:
        if is_not_modified(e):
            return False, None
        if is_missing(e):
            return True, None
        raise
    return True, (Rollout.from_dict(json.loads(obj["Body"].read())), str(obj["ETag"]))


def start(
    registry: Registry,
    *,
    candidate: int,
    baseline: int,
    mode: Mode,
    share: float,
    actor: str,
    thresholds: Thresholds | None = None,
) -> tuple[Rollout, str]:
    """Begin a rollout of `candidate` against production `baseline`; refused while another one runs."""
    registry.manifest(candidate)  # NotFound unless the candidate is a published version
    at = now_iso()
    rollout = Rollout(
        model=registry.name,
        candidate=candidate,
        baseline=baseline,
        mode=mode,
        share=share,
        started_at=at,
        started_by=actor,
        thresholds=thresholds or Thresholds(),
        history=(Event("started", actor, at, f"{mode} at {share:g} against v{baseline}"),),
        id=uuid.uuid4().hex[:12],
    )
    current = load(registry)
    if current is not None and current[0].running:
        running = current[0]
        raise ConflictError(
            f"model {registry.name!r} already has a running {running.mode} rollout of v{running.candidate} "
            f"(started by {running.started_by} at {running.started_at}); promote or abort it first",
            model=registry.name,
            candidate=running.candidate,
        )
    # a finished rollout is replaced, with the same CAS: a concurrent start loses
    return rollout, _write(registry, rollout, current[1] if current else None)


def decide(
    registry: Registry, rollout: Rollout, etag: str, *, status: Status, actor: str, reason: str
) -> tuple[Rollout, str]:
    """Record the decision on a running rollout, only if it is still as read (`etag`)."""
    if status == "running":
        raise ValueError("a decision is promoted or aborted")
    if not rollout.running:
        raise ConflictError(
            f"the rollout of {rollout.model!r} v{rollout.candidate} was already {rollout.status} "
            f"by {rollout.decided_by}: {rollout.reason}",
            model=rollout.model,
            status=rollout.status,
        )
    at = now_iso()
    history = (*rollout.history, Event(status, actor, at, reason))[-HISTORY_LIMIT:]
    decided = replace(rollout, status=status, decided_by=actor, decided_at=at, reason=reason, history=history)
    return decided, _write(registry, decided, etag)


def _write(registry: Registry, rollout: Rollout, etag: str | None) -> str:
    """Compare-and-swap, as the alias: create-only when `etag` is None, else only over that exact ETag."""
    conflict = ConflictError(
        f"the rollout of model {registry.name!r} changed meanwhile; re-read and retry", model=registry.name
    )
    return registry.put_json_cas(rollout_key(registry), rollout.to_dict(), etag, conflict)


def production_moved(registry: Registry, rollout: Rollout) -> str:
    """Why the rollout cannot go on when production no longer serves its baseline (someone moved it), else ""."""
    alias = registry.alias()
    if alias is not None and alias.version == rollout.baseline:
        return ""
    where = f"v{alias.version} (by {alias.doc.get('updated_by')})" if alias else "nowhere"
    return f"production moved to {where} since the rollout began against v{rollout.baseline}"
