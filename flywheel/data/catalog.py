"""The validated/ cache: every accepted batch converted once to typed Parquet, keyed by its content hash.

Layout (docs/architecture.md): `validated/<model>/<sha256>.parquet` per distinct content, and
`validated/<model>/index.json` mapping each object under data/ (key + ETag) to its hash, rows and upload
time. Only the trainer writes here, under its lock. A retrain re-validates only objects whose key and
ETag it has not seen; an entry whose object left data/ is dropped, so deleting a CSV removes it from
training. A change of schema invalidates the whole index.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from flywheel.data.validation import to_frame
from flywheel.errors import FlywheelError
from flywheel.schema import Schema
from flywheel.storage import is_missing

INDEX = "index.json"


@dataclass
class Entry:
    """An accepted batch: the exact object validated and what validation found."""

    key: str
    etag: str
    version_id: str | None
    sha256: str
    rows: int
    duplicates: int
    size: int
    uploaded: str  # the object's LastModified (ISO 8601): what "newest" means for the training window
    copy_sha256: str = ""  # of the Parquet copy: checked when it is read back

    def lineage(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "sha256": self.sha256,
            "rows": self.rows,
            "duplicate_rows": self.duplicates,
            "uploaded": self.uploaded,
        }


def repeats(entries: Iterable[Entry]) -> dict[str, str]:
    """{key: the key of the first batch with the same bytes} for every later copy (first by upload time, then by
    key): the trainer trains on the first only (flywheel/training/window.py), and the UI says why."""
    first: dict[str, str] = {}
    copies: dict[str, str] = {}
    for e in sorted(entries, key=lambda e: (e.uploaded, e.key)):
        if e.sha256 in first:
            copies[e.key] = first[e.sha256]
        else:
            first[e.sha256] = e.key
    return copies


def catalog_prefix(validated_prefix: str, model: str) -> str:
    """Where model `model`'s validated copies and index live: `validated/<model>/`."""
    return f"{validated_prefix}{model}/"


def indexed(s3: Any, bucket: str, prefix: str) -> list[Entry]:
    """The index's entries as stored, whatever schema they were validated for (a reader's view of what the trainer
    accepted, e.g. the UI's Data page); none before the first retrain. Entries of another release are left out."""
    try:
        doc = json.loads(s3.get_object(Bucket=bucket, Key=prefix + INDEX)["Body"].read())
    except ClientError as e:
        if is_missing(e):
            return []
        raise
    found = []
    for fields in doc.get("batches", {}).values():
        try:
            found.append(Entry(**fields))
        except TypeError:
            continue
    return found


class Catalog:
    """One model's validated batches."""

    def __init__(self, s3: Any, bucket: str, prefix: str, schema_sha256: str) -> None:
        self.s3, self.bucket, self.prefix, self.schema_sha256 = s3, bucket, prefix, schema_sha256
        self.entries: dict[str, Entry] = {}
        self._dirty = False

    def parquet_key(self, sha256: str) -> str:
        return f"{self.prefix}{sha256}.parquet"

    def load(self) -> Catalog:
        try:
            doc = json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.prefix + INDEX)["Body"].read())
        except ClientError as e:
            if not is_missing(e):
                raise
            return self
        if doc.get("schema_sha256") != self.schema_sha256:
            self._dirty = True  # another schema: every batch is validated again
            return self
        for key, fields in doc.get("batches", {}).items():
            try:
                self.entries[key] = Entry(**fields)
            except TypeError:  # written by another release: validate that batch again
                self._dirty = True
        return self

    def get(self, obj: dict[str, Any]) -> Entry | None:
        """The entry for this exact object (same key and ETag), if it was validated before."""
        entry = self.entries.get(obj["Key"])
        return entry if entry is not None and entry.etag == obj["ETag"].strip('"') else None

    def add(self, entry: Entry, parquet: Path) -> None:
        """Upload the typed copy (same content, same key: an overwrite changes nothing) and index it."""
        entry.copy_sha256 = _file_sha256(parquet)
        self.s3.upload_file(str(parquet), self.bucket, self.parquet_key(entry.sha256))
        self.entries[entry.key] = entry
        self._dirty = True

    def forget(self, key: str) -> None:
        """Drop one entry: its object is validated again by the next ingest."""
        if self.entries.pop(key, None) is not None:
            self._dirty = True

    def keep_only(self, keys: set[str]) -> list[str]:
        """Forget objects that left data/; returns their keys."""
        gone = sorted(set(self.entries) - keys)
        for k in gone:
            del self.entries[k]
        self._dirty = self._dirty or bool(gone)
        return gone

    def save(self) -> None:
        if not self._dirty:
            return
        doc = {"schema_sha256": self.schema_sha256, "batches": {k: asdict(e) for k, e in sorted(self.entries.items())}}
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.prefix + INDEX,
            Body=json.dumps(doc, indent=1).encode(),
            ContentType="application/json",
        )
        self._dirty = False

    def frame(self, entry: Entry, schema: Schema, workdir: Path) -> pd.DataFrame:
        """The typed rows of one batch, read back from its Parquet copy (MissingCopy if gone or altered)."""
        path = workdir / f"{entry.sha256}.parquet"
        try:
            self.s3.download_file(self.bucket, self.parquet_key(entry.sha256), str(path))
        except ClientError as e:
            if is_missing(e):
                raise MissingCopy(f"validated copy of {entry.key} is missing", file=entry.key) from e
            raise
        try:
            if entry.copy_sha256 and _file_sha256(path) != entry.copy_sha256:
                raise MissingCopy(f"validated copy of {entry.key} was altered", file=entry.key)
            return to_frame(pq.read_table(path), schema)
        finally:
            path.unlink(missing_ok=True)


class MissingCopy(FlywheelError):
    """A validated copy is gone or does not match its index entry: the batch is validated again."""

    def __init__(self, message: str, file: str) -> None:
        super().__init__(message, file=file)
        self.key = file


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
