"""Putting a batch under data/ with a create-only write: an existing batch is never replaced.

Replacing would silently swap the bytes a published version was trained on; the bucket's versioning would
keep them, but the lineage in manifests would point at a version nobody looks at. A name that is taken is
refused, atomically (`IfNoneMatch="*"`), with a message saying how to choose another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from flywheel.errors import ConflictError
from flywheel.storage import is_precondition_failed


def metadata_value(text: str) -> str:
    """S3 user metadata travels in HTTP headers: ASCII only, so anything else is percent-encoded."""
    return quote(text, safe=" ()@,.:;-_+/=<>")


class BatchExists(ConflictError):
    """A batch with this name is already under data/."""


def put_new(
    s3: Any,
    bucket: str,
    key: str,
    body: bytes | IO[bytes],
    *,
    via: str,
    how_to_rename: str,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Create `key` (object metadata `uploaded-via` plus `metadata`, e.g. `uploaded-by`, each value made
    header-safe by `metadata_value`); raise BatchExists when it is taken (nothing is written then)."""
    try:
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            IfNoneMatch="*",
            ContentType="text/csv",
            Metadata={**{k: metadata_value(v) for k, v in (metadata or {}).items()}, "uploaded-via": via},
        )
    except ClientError as e:
        if is_precondition_failed(e):
            raise BatchExists(
                f"s3://{bucket}/{key} already exists and batches are never replaced; {how_to_rename}", key=key
            ) from e
        raise
