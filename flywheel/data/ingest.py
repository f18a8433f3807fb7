"""Bring data/ and the validated/ cache in step: validate what is new, quarantine what fails, one batch at a time.

Per-batch isolation: whatever goes wrong while reading or validating one batch (a rejection, or an error
nobody foresaw) quarantines that batch with a report and never stops the others. Only S3 itself failing
(throttling, an outage) fails the retrain, so the delivery is retried and no good batch is quarantined
for a reason that is not its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from flywheel.data.batch_store import BatchStore, Fetched, Quarantined
from flywheel.data.catalog import Catalog, Entry
from flywheel.data.validation import SinkFailed, validate_stream
from flywheel.errors import BatchRejected
from flywheel.schema import Schema
from flywheel.storage import is_missing

log = logging.getLogger(__name__)


@dataclass
class Ingested:
    accepted: list[Entry] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    validated_now: int = 0  # batches validated in this run (the rest came from the cache)


class _ParquetSink:
    """Writes typed blocks to one Parquet file, opened on the first block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None

    def __call__(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def size_problem(obj: dict[str, Any], limit: int) -> BatchRejected:
    message = f"the file is {obj['Size']} bytes; the limit is {limit} (FLYWHEEL_MAX_BATCH_BYTES; split the file)"
    return BatchRejected(obj["Key"], [{"check": "size", "message": message}])


def unexpected_problem(key: str, e: BaseException) -> BatchRejected:
    message = f"validation failed unexpectedly: {type(e).__name__}: {e}"[:500]
    return BatchRejected(key, [{"check": "internal", "message": message, "exception": type(e).__name__}])


def _validate(
    store: BatchStore, catalog: Catalog, obj: dict[str, Any], schema: Schema, workdir: Path, dup_share: float
) -> Entry | tuple[BatchRejected, Fetched | None] | None:
    key, csv_path, parquet = obj["Key"], workdir / "batch.csv", workdir / "batch.parquet"
    try:
        got = store.fetch(key, csv_path)
    except ClientError as e:
        if is_missing(e):
            return None  # deleted since the listing
        raise
    sink = _ParquetSink(parquet)
    try:
        found = validate_stream(csv_path, key, schema, max_duplicate_fraction=dup_share, sink=sink)
        sink.close()
    except BatchRejected as e:
        sink.close()
        return e, got
    except (SinkFailed, MemoryError, OSError):
        raise  # the machine failed (disk full, out of memory), not the batch: fail the run, the delivery retries
    except Exception as e:  # a batch must never stop the flywheel: quarantine it, say why
        log.exception("unexpected error validating %s", key)
        return unexpected_problem(key, e), got
    finally:
        csv_path.unlink(missing_ok=True)
    entry = Entry(
        key=key,
        etag=got.etag,
        version_id=got.version_id,
        sha256=got.sha256,
        rows=found.rows,
        duplicates=found.duplicates,
        size=got.size,
        uploaded=got.uploaded,
    )
    catalog.add(entry, parquet)
    parquet.unlink(missing_ok=True)
    return entry


def ingest(
    store: BatchStore, catalog: Catalog, schema: Schema, workdir: Path, *, max_bytes: int, dup_share: float
) -> Ingested:
    """Every object under data/ ends up accepted (in the catalog) or quarantined; the catalog is saved."""
    out = Ingested()
    objects = store.objects()
    for gone in catalog.keep_only({o["Key"] for o in objects}):
        log.info("batch left data/: no longer trained on", extra={"file": gone})
    for obj in objects:
        entry = catalog.get(obj)
        if entry is not None:
            out.accepted.append(entry)
            continue
        if obj["Size"] > max_bytes:
            result: Entry | tuple[BatchRejected, Fetched | None] | None = (size_problem(obj, max_bytes), None)
        else:
            result = _validate(store, catalog, obj, schema, workdir, dup_share)
            out.validated_now += 1
        if isinstance(result, Entry):
            out.accepted.append(result)
        elif result is not None:
            rejected, got = result
            log.warning(
                "batch rejected: %s", rejected.message, extra={"file": rejected.key, "problems": rejected.problems}
            )
            etag = got.etag if got else obj["ETag"].strip('"')
            q = store.quarantine(rejected, etag=etag, version_id=got.version_id if got else None)
            if q:
                out.quarantined.append(q)
    catalog.save()
    return out


def quarantine_unrouted(s3: Any, settings: Any, key: str, name: str, known: list[str]) -> Quarantined | None:
    """A batch under `data/<name>/` when no model `name` is registered: quarantined with the reason."""
    try:
        head = s3.head_object(Bucket=settings.bucket, Key=key)
    except ClientError as e:
        if is_missing(e):
            return None
        raise
    message = (
        f"{name!r} is not a registered model (registered: {known}); upload under {settings.data_prefix}<model>/, "
        f"or register it first: flywheel models add {name} --schema FILE"
    )
    rejected = BatchRejected(key, [{"check": "model", "message": message}])
    store = BatchStore(s3, settings.bucket, settings.data_prefix, settings.quarantine_prefix)
    return store.quarantine(rejected, etag=head["ETag"].strip('"'), version_id=head.get("VersionId"))
