"""A version's history: one create-only JSON object per event under versions/<v>/history/ (issue 14).

The version's files are immutable, and so are its events: each decision about a version (a rollout started,
promoted or aborted, by the judge or an operator) is a new object, never an edit, so concurrent writers
cannot lose each other's records. `events` lists them oldest first.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from flywheel.registry.store import Registry

HISTORY_DIR = "history/"


def record(registry: Registry, version: int, what: str, who: str, reason: str, **extra: Any) -> dict[str, Any]:
    """Append one event to v`version`'s history (create-only; a unique name per event)."""
    at = datetime.now(UTC)
    doc = {"version": version, "what": what, "who": who, "when": at.isoformat(timespec="seconds"),
           "reason": reason, **extra}  # fmt: skip
    name = f"{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{what}-{uuid.uuid4().hex[:8]}.json"
    registry.s3.put_object(
        Bucket=registry.bucket,
        Key=registry.version_key(version, HISTORY_DIR + name),
        Body=json.dumps(doc, allow_nan=False).encode(),
        ContentType="application/json",
        IfNoneMatch="*",
    )
    return doc


def events(registry: Registry, version: int) -> list[dict[str, Any]]:
    """v`version`'s events, oldest first (the object names sort by time)."""
    prefix = registry.version_key(version, HISTORY_DIR)
    keys: list[str] = []
    for page in registry.s3.get_paginator("list_objects_v2").paginate(Bucket=registry.bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    out = []
    for key in sorted(keys):
        body = registry.s3.get_object(Bucket=registry.bucket, Key=key)["Body"].read()
        out.append(json.loads(body))
    return out
