"""The S3 model registry: immutable numbered versions, an alias moved by compare-and-swap, a trainer lock.

Layout (DESIGN.md): models/<name>/versions/<n>/{model.joblib,manifest.json,manifest.sig},
models/<name>/aliases/production.json, models/<name>/lock.json. manifest.sig (raw DER bytes) is written only
when the trainer has a signer (flywheel/registry/signing.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from flywheel.clock import now_iso
from flywheel.errors import ConflictError, LockBusy, NotFound
from flywheel.registry.signing import Signer, statement
from flywheel.storage import is_missing, is_not_modified, is_precondition_failed

ALIAS = "production"
VERSION_WIDTH = 6


@dataclass(frozen=True)
class Alias:
    """Where the production alias points, with the ETag needed to move it."""

    version: int
    etag: str
    doc: dict[str, Any]


class Registry:
    """Reads and writes one model's versions and alias in one bucket."""

    def __init__(self, s3: Any, bucket: str, name: str, models_prefix: str = "models/") -> None:
        self.s3, self.bucket, self.name = s3, bucket, name
        self.root = f"{models_prefix}{name}/"

    # -- keys --------------------------------------------------------------------------------------
    def version_key(self, version: int, filename: str) -> str:
        return f"{self.root}versions/{version:0{VERSION_WIDTH}d}/{filename}"

    @property
    def alias_key(self) -> str:
        return f"{self.root}aliases/{ALIAS}.json"

    @property
    def lock_key(self) -> str:
        return f"{self.root}lock.json"

    # -- versions ----------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        """Version numbers with a manifest (a claimed number without one is an abandoned attempt)."""
        found: set[int] = set()
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.root}versions/")
        for page in pages:
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(self.root) :].split("/")
                if len(parts) == 3 and parts[2] == "manifest.json" and parts[1].isdigit():
                    found.add(int(parts[1]))
        return sorted(found)

    def signed_versions(self) -> set[int]:
        """Version numbers with a manifest.sig (present; whether it verifies is the serving side's check)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.root}versions/")
        found: set[int] = set()
        for page in pages:
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(self.root) :].split("/")
                if len(parts) == 3 and parts[2] == "manifest.sig" and parts[1].isdigit():
                    found.add(int(parts[1]))
        return found

    def _claimed(self) -> int:
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.root}versions/", Delimiter="/"
        )
        nums = [
            int(p["Prefix"].rstrip("/").rsplit("/", 1)[1])
            for page in pages
            for p in page.get("CommonPrefixes", [])
            if p["Prefix"].rstrip("/").rsplit("/", 1)[1].isdigit()
        ]
        return max(nums, default=0)

    def manifest(self, version: int) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.manifest_bytes(version))
        return doc

    def manifest_bytes(self, version: int) -> bytes:
        """manifest.json exactly as stored (what its signature covers)."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.version_key(version, "manifest.json"))["Body"]
        except ClientError as e:
            if is_missing(e):
                raise NotFound(f"model {self.name!r} has no version {version}", version=version) from e
            raise
        data: bytes = body.read()
        return data

    def signature(self, version: int) -> bytes | None:
        """manifest.sig (DER bytes), None when the version is unsigned."""
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.version_key(version, "manifest.sig"))
        except ClientError as e:
            if is_missing(e):
                return None
            raise
        data: bytes = obj["Body"].read()
        return data

    def model_bytes(self, version: int) -> bytes:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.version_key(version, "model.joblib"))
        except ClientError as e:
            if is_missing(e):
                raise NotFound(f"version {version} has no model.joblib", version=version) from e
            raise
        data: bytes = obj["Body"].read()
        return data

    def publish(
        self, model: bytes, manifest: dict[str, Any], attempts: int = 20, *, signer: Signer | None = None
    ) -> int:
        """Claim the next number with a create-only write of model.joblib, then write its manifest and, with a
        signer, the manifest's signature (all create-only). The alias is moved by the caller, after this."""
        version = self._claimed() + 1
        for _ in range(attempts):
            try:
                self.s3.put_object(
                    Bucket=self.bucket, Key=self.version_key(version, "model.joblib"), Body=model, IfNoneMatch="*"
                )
            except ClientError as e:
                if is_precondition_failed(e):
                    version += 1
                    continue
                raise
            doc = {**manifest, "version": version}
            body = json.dumps(doc, indent=2, allow_nan=False).encode()
            # signed before the manifest is written: a signing failure leaves an abandoned claim, not a version
            # without a signature that a retry could promote; signed over the exact bytes stored
            signature = signer.sign(statement(self.name, version, body)) if signer is not None else None
            self._create(self.version_key(version, "manifest.json"), body, "application/json")
            if signature is not None:
                self._create(self.version_key(version, "manifest.sig"), signature, "application/octet-stream")
            return version
        raise ConflictError(f"could not claim a version number after {attempts} attempts")

    def _create(self, key: str, body: bytes, content_type: str) -> None:
        """A create-only write: versions are immutable."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")

    # -- alias -------------------------------------------------------------------------------------
    def alias(self) -> Alias | None:
        """Where production points now (None before the first promotion)."""
        return self.alias_if_changed(None)

    def alias_if_changed(self, etag: str | None) -> Alias | None:
        """Conditional GET: None when the alias still has `etag` (HTTP 304) or does not exist."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.alias_key}
        if etag:
            kwargs["IfNoneMatch"] = etag
        try:
            obj = self.s3.get_object(**kwargs)
        except ClientError as e:
            if is_not_modified(e) or is_missing(e):
                return None
            raise
        doc = json.loads(obj["Body"].read())
        return Alias(version=int(doc["version"]), etag=obj["ETag"], doc=doc)

    def move_alias(self, version: int, expected: Alias | None, *, actor: str, reason: str) -> Alias:
        """Compare-and-swap: succeeds only if the alias is still `expected` (None: must not exist yet)."""
        self.manifest(version)  # the target must exist
        doc = {
            "version": version,
            "previous": expected.version if expected else None,
            "updated_at": now_iso(),
            "updated_by": actor,
            "reason": reason,
        }
        conflict = ConflictError("the production alias moved meanwhile; re-read and retry", expected=doc["previous"])
        etag = self.put_json_cas(self.alias_key, doc, expected.etag if expected else None, conflict)
        return Alias(version=version, etag=etag, doc=doc)

    def put_json_cas(self, key: str, doc: Any, etag: str | None, conflict: ConflictError) -> str:
        """Compare-and-swap write of a JSON document: create-only when `etag` is None, else only over that exact
        ETag; a lost race raises `conflict`. Returns the new ETag (the alias and the rollout state use it)."""
        cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            out = self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=json.dumps(doc, allow_nan=False).encode(),
                ContentType="application/json",
                **cond,
            )
        except ClientError as e:
            if is_precondition_failed(e):
                raise conflict from e
            raise
        return str(out["ETag"])

    # -- single-flight lock ------------------------------------------------------------------------
    @contextmanager
    def lock(self, owner: str, ttl_seconds: int, adopt: str | None = None) -> Iterator[str]:
        """Create-only lock object; an expired one is taken over with IfMatch so only one trainer wins.

        `adopt`: the token of a lock claimed for this run by another process (a hand-off); it is taken over
        even though it has not expired. Released on every exit path.
        """
        token = self.claim(owner, ttl_seconds, adopt=adopt)
        try:
            yield token
        finally:
            self.release(token)

    def claim(self, owner: str, ttl_seconds: int, adopt: str | None = None) -> str:
        """Take the lock and return its token, without releasing it (the caller or its successor will)."""
        token = f"{owner}:{uuid.uuid4().hex[:12]}"
        body = json.dumps({"owner": token, "expires_at": time.time() + ttl_seconds, "acquired": now_iso()})
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.lock_key, Body=body.encode(), IfNoneMatch="*")
        except ClientError as e:
            if not is_precondition_failed(e):
                raise
            self._take_over(body, adopt)
        return token

    def lock_doc(self) -> dict[str, Any] | None:
        """The lock's document as it is (live or expired), None when there is none."""
        try:
            held: dict[str, Any] = json.loads(self.s3.get_object(Bucket=self.bucket, Key=self.lock_key)["Body"].read())
        except ClientError as e:
            if is_missing(e):
                return None
            raise
        return held

    def _take_over(self, body: str, adopt: str | None) -> None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.lock_key)
        except ClientError as e:
            if is_missing(e):  # released between our put and get: try once more from scratch
                raise LockBusy("trainer lock changed hands; retry") from e
            raise
        held = json.loads(obj["Body"].read())
        if held.get("expires_at", 0) > time.time() and not (adopt and held.get("owner") == adopt):
            raise LockBusy(
                f"another trainer holds the lock ({held.get('owner')})",
                holder=held.get("owner"),
                expires_at=held.get("expires_at"),
            )
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.lock_key, Body=body.encode(), IfMatch=obj["ETag"])
        except ClientError as e:
            if is_precondition_failed(e):
                raise LockBusy("another trainer took over the expired lock first") from e
            raise

    def release(self, token: str) -> None:
        """Delete the lock if `token` still holds it."""
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.lock_key)
            if json.loads(obj["Body"].read()).get("owner") == token:
                self.s3.delete_object(Bucket=self.bucket, Key=self.lock_key, IfMatch=obj["ETag"])
        except ClientError as e:
            if not (is_missing(e) or is_precondition_failed(e)):
                raise
