"""Exactly-once promotion: the alias moves to an approved version only from where it was at decision time.

The manifest records the alias (version and ETag) the gate decided against. The run that published the
version moves the alias with compare-and-swap on that ETag; a retry of a run that died in between finds
the approved version not yet serving and completes the same move. If anyone moved the alias since the
decision (a rollback, a manual promote), the swap fails and their choice stands, with the reason recorded.
"""

from __future__ import annotations

import contextlib
from typing import Any

from flywheel.errors import ConflictError, NotFound
from flywheel.registry.store import Alias, Registry


def decided_against(alias: Alias | None) -> dict[str, Any]:
    """What the manifest's gate section records about production at decision time."""
    return {
        "production_version": alias.version if alias else None,
        "production_alias_etag": alias.etag if alias else None,
    }


def move_as_decided(registry: Registry, version: int, gate: dict[str, Any], *, reason: str) -> tuple[bool, str]:
    """(moved, note). Compare-and-swap from the alias recorded in `gate`."""
    prev, etag = gate.get("production_version"), gate.get("production_alias_etag")
    expected = Alias(version=prev, etag=etag, doc={}) if prev is not None and etag else None
    try:
        registry.move_alias(version, expected, actor="trainer", reason=reason)
    except ConflictError:
        now = registry.alias()
        who = f" by {now.doc.get('updated_by')}" if now else ""
        where = f"v{now.version}" if now else "nowhere"
        return False, f"production moved to {where}{who} after v{version} was approved against v{prev}: left there"
    return True, f"production v{prev} -> v{version}" if prev else f"production -> v{version}"


def pending(manifest: dict[str, Any], alias: Alias | None) -> bool:
    """An approved version whose promotion may not have happened (the run died between publish and move)."""
    return (
        manifest.get("status") == "promoted"
        and "production_alias_etag" in manifest.get("gate", {})
        and (alias is None or alias.version != manifest["version"])
    )


def rollout_of(gate: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout policy recorded at decision time when the version goes out by shadow or canary (issue 14);
    None for a direct move, and always for a first version (nothing to compare it with)."""
    policy = gate.get("rollout") or {}
    if policy.get("mode", "direct") == "direct" or gate.get("production_version") is None:
        return None
    return dict(policy)


def release(registry: Registry, version: int, gate: dict[str, Any], *, reason: str) -> tuple[str, str]:
    """(outcome, note) for an approved version: "promoted" (alias moved), "rollout" (a rollout began against the
    production it was judged against) or "approved" (production moved meanwhile, or it is already under way).

    A rollout already running for an older candidate is superseded: the newest approved version is the one worth
    judging. Safe to repeat: a rollout of this very version that already exists is left as it is."""
    from flywheel.release import rollout_actions, rollout_state
    from flywheel.release.rollout_state import Thresholds

    policy = rollout_of(gate)
    if policy is None:
        moved, note = move_as_decided(registry, version, gate, reason=reason)
        return ("promoted" if moved else "approved"), note
    alias = registry.alias()
    if alias is None or alias.version != gate.get("production_version"):
        where = f"v{alias.version}" if alias else "nowhere"
        return "approved", f"production moved to {where} after v{version} was approved: no rollout started"
    found = rollout_state.load(registry)
    if found is not None and found[0].candidate == version:
        return "approved", f"a rollout of v{version} already exists ({found[0].status})"
    if found is not None and found[0].running:
        # the judge or an operator may have decided it meanwhile: theirs stands
        with contextlib.suppress(ConflictError, NotFound):
            rollout_actions.abort(registry, actor="trainer", reason=f"superseded by v{version}", expected_etag=found[1])
        alias = registry.alias()  # a promotion meanwhile moved production: judged against it below
        if alias is None or alias.version != gate.get("production_version"):
            where = f"v{alias.version}" if alias else "nowhere"
            return "approved", f"production moved to {where} while v{version} was released: no rollout started"
    mode, share = str(policy["mode"]), float(policy.get("share", 0.1))
    rollout_actions.begin(registry, version, actor="trainer", mode=mode, share=share,
                      thresholds=Thresholds.from_dict(policy.get("thresholds") or {}))  # fmt: skip
    return "rollout", f"{mode} rollout of v{version} at {share:g} against production v{alias.version}"


def pending_release(manifest: dict[str, Any], alias: Alias | None, has_rollout: bool) -> bool:
    """An approved version whose release (alias move or rollout start) may not have happened."""
    if rollout_of(manifest.get("gate", {})) is None:
        return pending(manifest, alias)
    serving = alias is not None and alias.version == manifest["version"]
    return manifest.get("status") == "promoted" and not has_rollout and not serving
