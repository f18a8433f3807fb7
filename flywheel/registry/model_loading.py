"""The one way a model is unpickled: the version's signature first, then its sha256, then the pickle.

Unpickling runs code, so every reader of a model (replicas, the trainer comparing against production, the Batch
job, tests and benchmarks) goes through `open_version` and `VerifiedVersion.load_model`; nothing else in the
project calls `joblib.load` or `pickle.load` (tests/unit/test_model_loading.py fails when something does).

With a verifier (every deployment Flywheel creates has one) a version whose manifest.sig is missing or does not
verify is refused before model.joblib is even downloaded. Without one the deployment is unsigned by choice
(`FLYWHEEL_VERIFY_*` and the signing settings unset) and the sha256 in the manifest is the only check.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import joblib

from flywheel.errors import ModelVerificationError
from flywheel.registry.manifest import sha256
from flywheel.registry.signing import SignatureError, Verifier, statement
from flywheel.registry.store import Registry


@dataclass(frozen=True)
class VerifiedVersion:
    """A version whose manifest checked out against the verifier (when there is one): what may be loaded."""

    registry: Registry
    version: int
    manifest: dict[str, Any]
    signed: bool

    def model_bytes(self) -> bytes:
        """model.joblib, checked to be the file the verified manifest names (for a peer server that loads a file)."""
        data = self.registry.model_bytes(self.version)
        actual = sha256(data)
        if actual != self.manifest["sha256"]:
            raise ModelVerificationError(
                f"model.joblib sha256 {actual[:12]}… does not match the manifest's {self.manifest['sha256'][:12]}…"
            )
        return data

    def load_model(self) -> Any:
        """Download model.joblib, check it is the file the verified manifest names, and only then unpickle it."""
        data = self.model_bytes()
        try:
            return joblib.load(io.BytesIO(data))
        except Exception as e:  # a corrupt pickle can raise almost anything
            raise ModelVerificationError(f"model.joblib does not load: {type(e).__name__}: {e}") from e


def open_version(registry: Registry, version: int, verifier: Verifier | None) -> VerifiedVersion:
    """Version `version`'s manifest, verified: raises SignatureError when a verifier is set and the signature is
    missing or wrong, ModelVerificationError when the manifest is not a manifest."""
    raw = registry.manifest_bytes(version)
    signed = False
    if verifier is not None:
        signature = registry.signature(version)
        if signature is None:
            raise SignatureError(f"v{version} has no manifest.sig and only signed versions load here")
        verifier.verify(statement(registry.name, version, raw), signature)
        signed = True
    try:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
            raise ValueError("no sha256 of model.joblib")
    except ValueError as e:
        raise ModelVerificationError(f"v{version} of {registry.name}: manifest.json is not a manifest: {e}") from e
    return VerifiedVersion(registry=registry, version=version, manifest=manifest, signed=signed)
