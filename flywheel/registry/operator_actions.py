"""Operator actions on the registry: list versions, promote one, roll back. Used by the CLI and the UI."""

from __future__ import annotations

from typing import Any

from flywheel.errors import ConflictError, NotFound
from flywheel.registry.signing import SignatureError, Verifier, statement
from flywheel.registry.store import Alias, Registry


def signature_state(registry: Registry, version: int, signed: bool, verifier: Verifier | None) -> str:
    """`unsigned`; with a verifier `valid` or `INVALID` (what the replicas would decide); else `signed`."""
    if not signed:
        return "unsigned"
    if verifier is None:
        return "signed"
    signature = registry.signature(version)
    if signature is None:
        return "unsigned"
    try:
        verifier.verify(statement(registry.name, version, registry.manifest_bytes(version)), signature)
    except SignatureError:
        return "INVALID"
    return "valid"


def summaries(registry: Registry, verifier: Verifier | None = None) -> list[dict[str, Any]]:
    """One row per version, oldest first, with the gate's decision (`gate`: approved or rejected) and numbers, the
    production version it was judged against (`trained_against`), whether it serves and its signature's state
    (checked with `verifier` when given: `valid`, `INVALID`, `unsigned`; else `signed` or `unsigned`). Where a version
    stands now (production, canary, ...) is flywheel.release.version_status's `status`."""
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
                "gate": "approved" if m["status"] == "promoted" else "rejected",
                "trained_against": m["gate"].get("production_version"),
                "production": alias is not None and alias.version == v,
                "signed": v in signed,
                "signature": signature_state(registry, v, v in signed, verifier),
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
