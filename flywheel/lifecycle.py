"""Operator actions on the registry: list versions, promote one, roll back. Used by the CLI and the UI."""

from __future__ import annotations

from typing import Any

from flywheel.errors import ConflictError, NotFound
from flywheel.registry import Alias, Registry


def summaries(registry: Registry) -> list[dict[str, Any]]:
    """One row per version, oldest first, with the gate's numbers, whether it serves and whether it is signed."""
    alias = registry.alias()
    signed = registry.signed_versions()
    rows = []
    for v in registry.versions():
        m = registry.manifest(v)
        primary = m["gate"]["primary_metric"]
        prod = m["metrics"].get("production") or {}
        rows.append(
            {
                "version": v,
                "status": m["status"],
                "production": alias is not None and alias.version == v,
                "signed": v in signed,
                "created_at": m["created_at"],
                "estimator": m["estimator"],
                "metric": primary,
                "candidate": m["metrics"]["candidate"][primary],
                "baseline": m["metrics"]["baseline"][primary],
                "previous_production": prod.get(primary),
                "rows": m["data"]["rows"],
                "batches": len(m["data"]["batches"]),
                "reasons": m["gate"]["reasons"],
            }
        )
    return rows


def promote(registry: Registry, version: int, *, actor: str, force: bool = False, reason: str = "") -> Alias:
    """Point production at `version`. A version the gate rejected needs force=True."""
    manifest = registry.manifest(version)
    if manifest["status"] != "promoted" and not force:
        raise ConflictError(
            f"v{version} was rejected by the gate ({'; '.join(manifest['gate']['reasons'][:1])}); "
            "pass --force to serve it anyway",
            version=version,
        )
    current = registry.alias()
    if current is not None and current.version == version:
        return current
    return registry.move_alias(version, current, actor=actor, reason=reason or f"promoted by {actor}")


def rollback(registry: Registry, *, actor: str) -> Alias:
    """Move production back to the newest gate-approved version older than the one serving now."""
    current = registry.alias()
    if current is None:
        raise NotFound("nothing is in production yet: nothing to roll back")
    older = [v for v in registry.versions() if v < current.version]
    for v in reversed(older):
        if registry.manifest(v)["status"] == "promoted":
            return registry.move_alias(v, current, actor=actor, reason=f"rollback from v{current.version}")
    raise NotFound(f"no approved version older than v{current.version} to roll back to")
