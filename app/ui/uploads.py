"""Putting a CSV into data/: the same path as any other drop (the bucket notifies the trainer)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from botocore.exceptions import ClientError

from flywheel.storage import is_missing

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def object_name(filename: str) -> str:
    """A safe object name from a browser-supplied file name: no folders, no odd characters, ends in .csv."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    stem = _UNSAFE.sub("-", base.removesuffix(".csv").removesuffix(".CSV")).strip("-.") or "batch"
    return f"{stem}.csv"


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if is_missing(e):
            return False
        raise
    return True


def put_batch(s3: Any, bucket: str, data_prefix: str, filename: str, data: bytes) -> str:
    """Upload under data/ and return the key. An existing name gets a UTC timestamp rather than replaced:
    replacing would silently swap the bytes a published version was trained on."""
    key = data_prefix + object_name(filename)
    if _exists(s3, bucket, key):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"{key.removesuffix('.csv')}-{stamp}.csv"
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="text/csv", Metadata={"uploaded-via": "flywheel-ui"})
    return key
