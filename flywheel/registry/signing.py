"""Signed model versions: the trainer signs each manifest, pods verify the signature before reading the model.

ECDSA on P-256 with SHA-256 (KMS key spec ECC_NIST_P256, algorithm ECDSA_SHA_256); signatures are DER, stored
as raw bytes in `models/<name>/versions/<n>/manifest.sig`. What is signed is a short statement naming the model,
the version and the sha256 of the exact manifest.json bytes in S3 (`statement`): KMS signs a RAW message of at
most 4096 bytes and a manifest is larger, and the statement binds the signature to its place, so a signed
manifest copied to another model or version does not verify there. The manifest holds the model's sha256, so
the signature vouches for model.joblib too.

Signers: a KMS key (FLYWHEEL_SIGNING_KMS_KEY_ID, the cloud: only the trainer's role may call kms:Sign) or a PEM
private key file (FLYWHEEL_SIGNING_KEY_FILE, `flywheel up`). Verifiers: the KMS key's public key, fetched once
(FLYWHEEL_VERIFY_KMS_KEY_ID), or a PEM public key file (FLYWHEEL_VERIFY_PUBLIC_KEY_FILE); verification is local.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flywheel.errors import ModelVerificationError

ALGORITHM = "ECDSA_SHA_256"
STATEMENT_FORMAT = b"flywheel-signed-manifest/1"
_ECDSA = ec.ECDSA(hashes.SHA256())


class SignatureError(ModelVerificationError):
    """A version has no signature, or one that does not verify with the configured key."""


class Signer(Protocol):
    def sign(self, message: bytes) -> bytes:
        """A DER ECDSA P-256/SHA-256 signature of `message`."""
        ...

    def verifier(self) -> Verifier:
        """A verifier of this signer's signatures (its public key): the trainer checks what it reads with it."""
        ...


class Verifier(Protocol):
    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise SignatureError unless `signature` signs `message`."""
        ...


def statement(model: str, version: int, manifest: bytes) -> bytes:
    """What is signed for version `version` of `model` whose manifest.json is exactly `manifest`."""
    digest = hashlib.sha256(manifest).hexdigest()
    return b"\n".join([STATEMENT_FORMAT, f"model={model}".encode(), f"version={version}".encode(),
                       f"manifest-sha256={digest}".encode(), b""])  # fmt: skip


def _p256(key: Any, what: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError(f"{what} is not an ECDSA P-256 key (ECC_NIST_P256)")


class KeyFileSigner:
    """Signs with a PEM private key read from a file (local mode)."""

    def __init__(self, path: Path) -> None:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        _p256(key, str(path))
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key, self.source = key, str(path)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, _ECDSA)

    def verifier(self) -> Verifier:
        return PublicKeyVerifier(self._key.public_key(), f"the public half of {self.source}")


class KmsSigner:
    """Signs with a KMS asymmetric key; the private key never leaves KMS."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self.kms, self.key_id = kms, key_id

    def sign(self, message: bytes) -> bytes:
        out = self.kms.sign(KeyId=self.key_id, Message=message, MessageType="RAW", SigningAlgorithm=ALGORITHM)
        signature: bytes = out["Signature"]
        return signature

    def verifier(self) -> Verifier:
        return KmsVerifier(self.kms, self.key_id)


class PublicKeyVerifier:
    """Verifies locally with a P-256 public key."""

    def __init__(self, key: Any, source: str) -> None:
        _p256(key, source)
        self._key, self.source = key, source

    @classmethod
    def from_pem_file(cls, path: Path) -> PublicKeyVerifier:
        return cls(serialization.load_pem_public_key(path.read_bytes()), str(path))

    def verify(self, message: bytes, signature: bytes) -> None:
        try:
            self._key.verify(signature, message, _ECDSA)
        except InvalidSignature as e:
            raise SignatureError(f"signature does not verify with {self.source}") from e


class KmsVerifier:
    """Fetches the KMS key's public key once (on first use, so a KMS outage at start-up is a retried load
    failure rather than a crash loop), then verifies locally: no KMS call per version."""

    def __init__(self, kms: Any, key_id: str) -> None:
        self.kms, self.key_id = kms, key_id
        self._verifier: PublicKeyVerifier | None = None
        self._lock = threading.Lock()

    def _public(self) -> PublicKeyVerifier:
        with self._lock:
            if self._verifier is None:
                try:
                    der = self.kms.get_public_key(KeyId=self.key_id)["PublicKey"]
                except Exception as e:  # KMS down or refusing: nothing can be verified, so nothing is trusted
                    raise SignatureError(f"cannot read the public key of KMS key {self.key_id}: {e}") from e
                key = serialization.load_der_public_key(der)
                self._verifier = PublicKeyVerifier(key, f"KMS key {self.key_id}")
            return self._verifier

    def verify(self, message: bytes, signature: bytes) -> None:
        self._public().verify(message, signature)


def _kms() -> Any:
    from flywheel.storage import kms_client

    return kms_client()


def signer(kms_key_id: str | None, key_file: str | None, kms: Any = None) -> Signer | None:
    """The trainer's signer from its settings; None when neither is configured (versions are unsigned)."""
    if kms_key_id:
        return KmsSigner(kms if kms is not None else _kms(), kms_key_id)
    if key_file:
        return KeyFileSigner(Path(key_file))
    return None


def verifier(kms_key_id: str | None, public_key_file: str | None, kms: Any = None) -> Verifier | None:
    """A pod's verifier from its settings; None when neither is configured (unsigned versions are accepted)."""
    if kms_key_id:
        return KmsVerifier(kms if kms is not None else _kms(), kms_key_id)
    if public_key_file:
        return PublicKeyVerifier.from_pem_file(Path(public_key_file))
    return None


def generate_key_pair(private_path: Path, public_path: Path) -> None:
    """Write a new P-256 key pair (PEM); the private key file is created with mode 0600, never overwritten."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_path.write_bytes(public)
