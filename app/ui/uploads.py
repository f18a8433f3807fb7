"""Putting a CSV into a model's data/<name>/: the same path as any other drop (the bucket notifies the trainer)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from flywheel.data.uploads import put_new

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def object_name(filename: str) -> str:
    """A safe object name from a browser-supplied file name: no folders, no odd characters, ends in .csv."""
    base = PurePosixPath(filename.replace("\\", "/")).name
    stem = _UNSAFE.sub("-", base.removesuffix(".csv").removesuffix(".CSV")).strip("-.") or "batch"
    return f"{stem}.csv"


def put_batch(s3: Any, bucket: str, data_prefix: str, filename: str, data: bytes, *, uploaded_by: str) -> str:
    """Upload under `data_prefix` (the model's `data/<name>/`) with a create-only write, recording who uploaded
    it (object metadata `uploaded-by`), and return the key; raises BatchExists for a taken name."""
    key = data_prefix + object_name(filename)
    put_new(s3, bucket, key, data, via="flywheel-ui", how_to_rename="give the batch another name ('Save as')",
            metadata={"uploaded-by": uploaded_by})  # fmt: skip
    return key
