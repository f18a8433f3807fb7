"""What became of one uploaded batch: quarantined, trained into a version (and where that version stands), or
accepted but not trained on (an exact repeat, outside the window). `flywheel drop --wait` polls it.

Everything is read from the bucket as the trainer leaves it: the quarantine report beside a rejected batch, the
lineage of the versions published since the upload, and the model's catalog of accepted batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flywheel.data.batch_store import ERROR_SUFFIX
from flywheel.data.catalog import catalog_prefix, indexed, repeats
from flywheel.registry.store import Registry
from flywheel.release.version_status import listing
from flywheel.settings import CoreSettings
from flywheel.storage import is_missing


@dataclass(frozen=True)
class Outcome:
    """`accepted` False: quarantined (the report's lines in `lines`)."""

    accepted: bool
    lines: list[str]


def _quarantine_report(s3: Any, settings: CoreSettings, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    target = settings.quarantine_prefix + key[len(settings.data_prefix) :] + ERROR_SUFFIX
    try:
        doc: dict[str, Any] = json.loads(s3.get_object(Bucket=settings.bucket, Key=target)["Body"].read())
    except ClientError as e:
        if is_missing(e):
            return None
        raise
    return {**doc, "report_key": target}


def batch_outcome(s3: Any, settings: CoreSettings, model: str, key: str, after: int) -> Outcome | None:
    """The outcome of batch `key` of `model`, uploaded when the newest version was `after`; None: not yet."""
    report = _quarantine_report(s3, settings, key)
    if report is not None:
        problems = report.get("problems") or [{"check": "error", "message": report.get("error", "")}]
        lines = [f"{key}: quarantined -> s3://{settings.bucket}/{report['report_key']}"]
        lines += [f"  {p.get('check')}{' [' + p['column'] + ']' if p.get('column') else ''}: {p.get('message')}"
                  for p in problems]  # fmt: skip
        return Outcome(False, lines)
    registry = Registry(s3, settings.bucket, model, settings.models_prefix)
    for version in sorted((v for v in registry.versions() if v > after), reverse=True):
        manifest = registry.manifest(version)
        data = manifest.get("data", {})
        if any(b.get("key") == key for b in data.get("batches", [])):
            return Outcome(True, _trained(registry, version, manifest, key))
        left = [b for b in data.get("left_out", []) if b.get("key") == key]
        if left:
            return Outcome(True, [f"{key}: accepted, not trained on by v{version}: {left[0].get('reason')}"])
    copies = repeats(indexed(s3, settings.bucket, catalog_prefix(settings.validated_prefix, model)))
    if key in copies:
        return Outcome(True, [f"{key}: accepted, not trained on: same content as {copies[key]} (nothing new)"])
    return None


def _trained(registry: Registry, version: int, manifest: dict[str, Any], key: str) -> list[str]:
    found = listing(registry)
    status = next((r["status"] for r in found.rows if r["version"] == version), "?")
    gate = manifest.get("gate", {})
    lines = [f"{key}: trained into {registry.name} v{version}: {status}"]
    lines += [f"  {reason}" for reason in gate.get("reasons", [])]
    lines.append(f"  {registry.name}: {found.serving}")
    return lines
