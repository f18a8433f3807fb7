"""One status per model version, the same in `flywheel models` and the UI's Models page (docs/rollouts.md,
"Version status").

A manifest's `status` is the gate's decision at training time (`promoted` there means *passed the gate*); it says
nothing of whether the version ever served. Where a version stands now needs the production alias, the rollout
state and the version's history as well: a canary candidate has passed the gate but is not production.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flywheel.registry import history
from flywheel.registry.operator_actions import summaries
from flywheel.registry.signing import Verifier
from flywheel.registry.store import Alias, Registry
from flywheel.release.rollout_state import Rollout, load

#: every status word and what it means (docs/rollouts.md and docs/ui.md repeat this table)
STATUSES: dict[str, str] = {
    "production": "serving now: the production alias points at it",
    "canary": "candidate of a running canary rollout: it answers a share of the requests beside production",
    "shadow": "candidate of a running shadow rollout: it runs on a share of production's requests and answers none",
    "was production": "served as production earlier; production has moved on since (a newer version, a roll back)",
    "aborted": "its rollout was aborted (by the judge, an operator, or a newer version superseding it); never served",
    "approved": "passed the gate but has not served: no rollout of it ran and the alias never moved to it",
    "rejected": "failed the gate; never served (an operator may still promote it with --force)",
}


def version_status(
    version: int,
    *,
    approved: bool,
    production: int | None,
    rollout: Rollout | None,
    served_before: Collection[int] = (),
    aborted: bool = False,
) -> str:
    """The status word of one version (a key of STATUSES). `approved`: the gate passed it (manifest `status`
    "promoted"); `production`: the version the alias points at; `rollout`: the model's rollout state (running or
    decided); `served_before`: versions known to have been production; `aborted`: a rollout of it was aborted."""
    if version == production:
        return "production"
    if rollout is not None and rollout.running and rollout.candidate == version:
        return rollout.mode
    if version in served_before:
        return "was production"
    if aborted or (rollout is not None and rollout.status == "aborted" and rollout.candidate == version):
        return "aborted"
    return "approved" if approved else "rejected"


def served_before(trained_against: Iterable[int | None], alias: Alias | None, rollout: Rollout | None) -> set[int]:
    """Versions known to have been production: each version's production at training time (`trained_against`,
    the manifests' `gate.production_version`), the alias's current and previous version, the baseline of the
    model's rollout and the candidate of a promoted one."""
    found: set[Any] = set(trained_against)
    if alias is not None:
        found |= {alias.version, alias.doc.get("previous")}
    if rollout is not None:
        found.add(rollout.baseline)
        if rollout.status == "promoted":
            found.add(rollout.candidate)
    return {int(v) for v in found if v is not None}


def share_phrase(rollout: Rollout | Mapping[str, Any]) -> str:
    """`canary v4 (20% of keys)` or `shadow v4 (runs on 20% of requests)`: the candidate and what it gets."""
    r = rollout.to_dict() if isinstance(rollout, Rollout) else rollout
    pct = f"{float(r['share']) * 100:g}%"
    gets = f"{pct} of keys" if r["mode"] == "canary" else f"runs on {pct} of requests"
    return f"{r['mode']} v{r['candidate']} ({gets})"


def serving_line(production: int | None, rollout: Rollout | Mapping[str, Any] | None) -> str:
    """`serving v3 · canary v4 (20% of keys)`: the version in production and, while a rollout runs, its candidate."""
    parts = [f"serving v{production}" if production is not None else "nothing in production"]
    r = rollout.to_dict() if isinstance(rollout, Rollout) else rollout
    if r is not None and r.get("status", "running") == "running":
        parts.append(share_phrase(r))
    return " · ".join(parts)


@dataclass(frozen=True)
class Listing:
    """A model's versions (operator_actions.summaries rows, each with its `status`), its alias and its rollout."""

    rows: list[dict[str, Any]]
    alias: Alias | None
    rollout: Rollout | None

    @property
    def serving(self) -> str:
        return serving_line(self.alias.version if self.alias else None, self.rollout)


def _aborted(registry: Registry, version: int) -> bool:
    """The version's last recorded rollout decision was an abort (its history: create-only events)."""
    decisions = [e["what"] for e in history.events(registry, version) if e.get("what", "").startswith("rollout-")]
    return bool(decisions) and decisions[-1] == "rollout-aborted"


def listing(registry: Registry, verifier: Verifier | None = None) -> Listing:
    """Every version of the model, oldest first, with its status. Reads the alias and the rollout once; a version's
    history only when nothing else tells an approved version that never served from an aborted candidate."""
    alias = registry.alias()
    found = load(registry)
    rollout = found[0] if found else None
    rows = summaries(registry, verifier)
    production = alias.version if alias else None
    before = served_before((r["trained_against"] for r in rows), alias, rollout)
    for row in rows:
        v = row["version"]
        row["production"] = v == production
        status = version_status(v, approved=row["gate"] == "approved", production=production, rollout=rollout,
                                served_before=before)  # fmt: skip
        if status == "approved" and _aborted(registry, v):
            status = "aborted"
        row["status"] = status
    return Listing(rows, alias, rollout)
