"""Uploaded batches under data/: list, read with validation, quarantine with a reason. Nothing is lost."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from botocore.exceptions import ClientError

from flywheel.errors import BatchRejected
from flywheel.registry import now_iso
from flywheel.schema import Schema
from flywheel.storage import is_missing
from flywheel.validation import validate_batch

ERROR_SUFFIX = ".error.json"


@dataclass
class Batch:
    """An accepted batch and its lineage."""

    key: str
    version_id: str | None
    etag: str
    sha256: str
    rows: int
    frame: pd.DataFrame

    def lineage(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "sha256": self.sha256,
            "rows": self.rows,
        }


@dataclass
class Quarantined:
    key: str
    quarantine_key: str
    problems: list[dict[str, Any]]


class BatchStore:
    """The data side of the bucket."""

    def __init__(self, s3: Any, bucket: str, data_prefix: str, quarantine_prefix: str) -> None:
        self.s3, self.bucket = s3, bucket
        self.data_prefix, self.quarantine_prefix = data_prefix, quarantine_prefix

    def objects(self) -> list[dict[str, Any]]:
        """Objects under data/ (sorted by key), folder markers excluded."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.data_prefix)
        objs = [o for p in pages for o in p.get("Contents", []) if not o["Key"].endswith("/")]
        return sorted(objs, key=lambda o: o["Key"])

    def load(self, obj: dict[str, Any], schema: Schema, *, max_bytes: int, max_duplicate_fraction: float) -> Batch:
        """Read and validate one object; raises BatchRejected naming the file, rows and columns."""
        key = obj["Key"]
        if obj["Size"] > max_bytes:
            raise BatchRejected(
                key,
                [{"check": "size", "message": f"the file is {obj['Size']} bytes; the limit is {max_bytes}"}],
            )
        got = self.s3.get_object(Bucket=self.bucket, Key=key)
        data = got["Body"].read()
        frame = validate_batch(data, key, schema, max_duplicate_fraction=max_duplicate_fraction)
        return Batch(
            key=key,
            version_id=got.get("VersionId"),
            etag=got["ETag"].strip('"'),
            sha256=hashlib.sha256(data).hexdigest(),
            rows=len(frame),
            frame=frame,
        )

    def quarantine(self, rejected: BatchRejected) -> Quarantined | None:
        """Copy the batch to quarantine/ with its reasons beside it, then remove it from data/.

        The bucket is versioned, so the data/ object's bytes stay recoverable as a noncurrent version too.
        Returns None when the object vanished meanwhile (someone else moved it).
        """
        key = rejected.key
        target = self.quarantine_prefix + key[len(self.data_prefix) :]
        try:
            self.s3.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": key})
        except ClientError as e:
            if is_missing(e):
                return None
            raise
        report = {"file": key, "quarantined_as": target, "at": now_iso(), **rejected.to_dict()}
        self.s3.put_object(
            Bucket=self.bucket,
            Key=target + ERROR_SUFFIX,
            Body=json.dumps(report, indent=2).encode(),
            ContentType="application/json",
        )
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        return Quarantined(key=key, quarantine_key=target, problems=rejected.problems)

    def quarantined(self) -> list[dict[str, Any]]:
        """The error reports under quarantine/, newest first."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.quarantine_prefix)
        reports = []
        for page in pages:
            for o in page.get("Contents", []):
                if o["Key"].endswith(ERROR_SUFFIX):
                    body = self.s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
                    reports.append(json.loads(body))
        return sorted(reports, key=lambda r: r.get("at", ""), reverse=True)
