"""Signing primitives: statements, key files, refusals. Nothing but Python."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from flywheel.errors import ModelVerificationError
from flywheel.registry.signing import KeyFileSigner, PublicKeyVerifier, SignatureError, generate_key_pair, statement
from flywheel.settings import ServeSettings, TrainerSettings


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "k" / "key.pem", tmp_path / "k" / "key.pub.pem"
    generate_key_pair(private, public)
    return private, public


def test_key_pair_is_private_and_signatures_verify(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE" not in public.read_bytes()
    message = statement("savings", 3, b'{"sha256": "ab"}')
    signature = KeyFileSigner(private).sign(message)
    assert signature[0] == 0x30  # DER SEQUENCE
    PublicKeyVerifier.from_pem_file(public).verify(message, signature)


def test_a_signature_covers_model_version_and_manifest_bytes(keys: tuple[Path, Path], tmp_path: Path) -> None:
    private, public = keys
    signature = KeyFileSigner(private).sign(statement("savings", 3, b"manifest"))
    verifier = PublicKeyVerifier.from_pem_file(public)
    for other in (statement("churn", 3, b"manifest"), statement("savings", 4, b"manifest"),
                  statement("savings", 3, b"manifest ")):  # fmt: skip
        with pytest.raises(SignatureError) as e:
            verifier.verify(other, signature)
        assert isinstance(e.value, ModelVerificationError)  # the host counts it like any failed check
    other_private, other_public = tmp_path / "o.pem", tmp_path / "o.pub.pem"
    generate_key_pair(other_private, other_public)
    with pytest.raises(SignatureError):
        PublicKeyVerifier.from_pem_file(other_public).verify(statement("savings", 3, b"manifest"), signature)
    with pytest.raises(SignatureError):
        verifier.verify(statement("savings", 3, b"manifest"), b"garbage")


def test_the_private_key_is_never_overwritten(keys: tuple[Path, Path]) -> None:
    with pytest.raises(FileExistsError):
        generate_key_pair(*keys)


def test_one_key_source_each() -> None:
    with pytest.raises(ValidationError, match="not both"):
        TrainerSettings(bucket="b-1", signing_kms_key_id="k", signing_key_file="/f")
    with pytest.raises(ValidationError, match="not both"):
        ServeSettings(bucket="b-1", verify_kms_key_id="k", verify_public_key_file="/f")
