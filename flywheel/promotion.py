"""Exactly-once promotion: the alias moves to an approved version only from where it was at decision time.

The manifest records the alias (version and ETag) the gate decided against. The run that published the
version moves the alias with compare-and-swap on that ETag; a retry of a run that died in between finds
the approved version not yet serving and completes the same move. If anyone moved the alias since the
decision (a rollback, a manual promote), the swap fails and their choice stands, with the reason recorded.
"""

from __future__ import annotations

from typing import Any

from flywheel.errors import ConflictError
from flywheel.registry import Alias, Registry


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
