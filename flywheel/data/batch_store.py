"""Uploaded batches under data/: list, fetch the exact version, quarantine that version with a reason.

Nothing a user uploads is lost: quarantine copies the validated object version (pinned by version id and
ETag) and removes it from data/ only if it is still the current object there (a conditional delete), so
a re-upload landing meanwhile stays; with bucket versioning the original stays as a noncurrent version too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from flywheel.clock import now_iso
from flywheel.errors import BatchRejected
from flywheel.names import check_name
from flywheel.settings import CoreSettings
from flywheel.storage import is_missing, is_precondition_failed

ERROR_SUFFIX = ".error.json"
CHUNK = 1 << 20


@dataclass
class Fetched:
    """The object version that was downloaded (and is the one validated)."""

    key: str
    etag: str
    version_id: str | None
    sha256: str
    size: int
    uploaded: str


@dataclass
class Quarantined:
    key: str
    quarantine_key: str
    problems: list[dict[str, Any]]
    removed: bool = True  # False: a newer upload took the name meanwhile and was left in data/


class BatchStore:
    """The data side of the bucket for one model: `data/<folder>` (and, for the default model of a bucket laid
    out the old way, the CSVs directly under `data/`). Quarantine mirrors the path: `quarantine/<folder>...`."""

    def __init__(
        self, s3: Any, bucket: str, data_prefix: str, quarantine_prefix: str, *, folder: str = "", flat: bool = False
    ) -> None:
        self.s3, self.bucket = s3, bucket
        self.data_prefix, self.quarantine_prefix = data_prefix, quarantine_prefix
        self.folder, self.flat = folder, flat

    def _list(self, prefix: str, delimiter: str | None) -> list[dict[str, Any]]:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
        pages = self.s3.get_paginator("list_objects_v2").paginate(**kwargs)
        return [o for p in pages for o in p.get("Contents", []) if not o["Key"].endswith("/")]

    def objects(self) -> list[dict[str, Any]]:
        """This model's objects under data/ (sorted by key), folder markers excluded."""
        objs = self._list(self.data_prefix + self.folder, None)
        if self.flat and self.folder:
            objs += self._list(self.data_prefix, "/")
        return sorted(objs, key=lambda o: o["Key"])

    def fetch(self, key: str, dest: Path) -> Fetched:
        """Stream the current version to `dest`, hashing as it goes (memory stays one chunk)."""
        got = self.s3.get_object(Bucket=self.bucket, Key=key)
        digest, size = hashlib.sha256(), 0
        with dest.open("wb") as f:
            for chunk in got["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
        return Fetched(
            key=key,
            etag=got["ETag"].strip('"'),
            version_id=got.get("VersionId"),
            sha256=digest.hexdigest(),
            size=size,
            uploaded=got["LastModified"].isoformat(),
        )

    def quarantine(self, rejected: BatchRejected, *, etag: str, version_id: str | None) -> Quarantined | None:
        """Copy exactly the validated version to quarantine/ with the reasons beside it, then take it out of data/.

        Returns None when that version is gone already (someone else moved it, or a new upload replaced it
        before the copy: the new one is validated on its own).
        """
        key = rejected.key
        target = self.quarantine_prefix + key[len(self.data_prefix) :]
        source: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            source["VersionId"] = version_id
        try:
            copied = self.s3.copy_object(
                Bucket=self.bucket, Key=target, CopySource=source, CopySourceIfMatch=f'"{etag}"'
            )
        except ClientError as e:
            if is_missing(e) or is_precondition_failed(e):
                return None
            raise
        removed = True
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=f'"{etag}"')
        except ClientError as e:
            if not (is_missing(e) or is_precondition_failed(e)):
                raise
            removed = False  # a re-upload replaced it: leave the new bytes alone
        report = {
            "file": key,
            "version_id": version_id,
            "etag": etag,
            "quarantined_as": target,
            "quarantined_version_id": copied.get("VersionId"),
            "removed_from_data": removed,
            "at": now_iso(),
            **rejected.to_dict(),
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=target + ERROR_SUFFIX,
            Body=json.dumps(report, indent=2).encode(),
            ContentType="application/json",
        )
        return Quarantined(key=key, quarantine_key=target, problems=rejected.problems, removed=removed)

    def quarantined(self) -> list[dict[str, Any]]:
        """This model's error reports under quarantine/, newest first."""
        objs = self._list(self.quarantine_prefix + self.folder, None)
        if self.flat and self.folder:
            objs += self._list(self.quarantine_prefix, "/")
        reports = []
        for o in objs:
            if o["Key"].endswith(ERROR_SUFFIX):
                body = self.s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
                reports.append(json.loads(body))
        return sorted(reports, key=lambda r: r.get("at", ""), reverse=True)


def model_batches(s3: Any, settings: CoreSettings, name: str) -> BatchStore:
    """Model `name`'s batches: `data/<name>/`, and for the default model also the CSVs directly under `data/`."""
    return BatchStore(
        s3,
        settings.bucket,
        settings.data_prefix,
        settings.quarantine_prefix,
        folder=f"{check_name(name)}/",
        flat=name == settings.model_name,
    )
