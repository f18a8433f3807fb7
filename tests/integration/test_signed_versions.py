"""Signed versions with real parts: moto's KMS (CreateKey ECC_NIST_P256, Sign, GetPublicKey, Verify) and S3,
the trainer, and `flywheel serve` replicas that verify before they read a model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from prometheus_client import CollectorRegistry

from flywheel.registry.manifest import dump_model
from flywheel.registry.operator_actions import summaries
from flywheel.registry.signing import KmsVerifier, PublicKeyVerifier, generate_key_pair, statement
from flywheel.registry.store import Registry
from flywheel.serving.host import ModelHost
from flywheel.serving.metrics import ServingMetrics
from flywheel.storage import s3_client
from tests.conftest import REGION, Stack
from tests.helpers import eventually
from tests.integration.conftest import ROW, Replica, metric, predict, serving_version, train, wait_for


@pytest.fixture
def kms_key(moto_endpoint: str) -> str:
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name=REGION)
    return str(kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"])


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "signing" / "key.pem", tmp_path / "signing" / "key.pub.pem"
    generate_key_pair(private, public)
    return private, public


def _replace_by_another_principal(stack: Stack, version: int) -> None:
    """Overwrite model.joblib and manifest.json of `version` with a consistent pair (the sha256 matches)
    that the trainer never signed: what anyone with write access under models/ could do."""
    registry = Registry(s3_client(), stack.bucket, "savings")
    manifest = registry.manifest(version)
    model = dump_model({"not": "the trainer's model"})
    manifest["sha256"], manifest["size_bytes"] = hashlib.sha256(model).hexdigest(), len(model)
    stack.put(registry.version_key(version, "model.joblib"), model)
    stack.put(registry.version_key(version, "manifest.json"), json.dumps(manifest, indent=2).encode())


def test_kms_signed_versions_serve_and_a_replaced_version_never_does(
    stack: Stack,
    moto_endpoint: str,
    kms_key: str,
    start_replica: Callable[..., Replica],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_SIGNING_KMS_KEY_ID", kms_key)
    assert train(stack, seed=1) == 1
    registry = Registry(s3_client(), stack.bucket, "savings")
    raw, signature = registry.manifest_bytes(1), registry.signature(1)
    assert signature is not None
    kms = boto3.client("kms", endpoint_url=moto_endpoint, region_name=REGION)
    message = statement("savings", 1, raw)
    assert kms.verify(KeyId=kms_key, Message=message, MessageType="RAW", Signature=signature,
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]  # fmt: skip
    KmsVerifier(kms, kms_key).verify(message, signature)  # the pods' path: public key once, local check

    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_VERIFY_KMS_KEY_ID=kms_key)
    wait_for(lambda: serving_version(api.url) == 1, 60, what="signed v1 served")

    assert train(stack, seed=2, drift=1.0) == 2  # signed, promoted, then tampered with before a replica loads it
    wait_for(lambda: serving_version(api.url) == 2, 60, what="signed v2 served")
    registry.move_alias(1, registry.alias(), actor="test", reason="back to v1")
    wait_for(lambda: serving_version(api.url) == 1, 60, what="v1 again")
    _replace_by_another_principal(stack, 2)
    registry.move_alias(2, registry.alias(), actor="test", reason="to the replaced v2")
    wait_for(lambda: metric(api.url, "flywheel_model_reloads_total", model="savings", result="failure") >= 1, 60,
             what="failure counted")  # fmt: skip
    assert serving_version(api.url) == 1
    assert predict(api.url, [ROW]).json()["model_version"] == 1
    # logged by the host thread just after it counts the failure
    eventually(api.output, lambda out: "refusing v2" in out and "signature does not verify" in out, 60,
               what="'refusing v2 ... signature does not verify' logged")  # fmt: skip
    # `flywheel models` (and the UI) show the failure, checked as the replicas check it
    states = [r["signature"] for r in summaries(registry, KmsVerifier(kms, kms_key))]
    assert states == ["valid", "INVALID"]
    assert [r["signature"] for r in summaries(registry)] == ["signed", "signed"]  # no verifier: presence only


def test_key_file_signing_and_unsigned_versions_refused(
    stack: Stack,
    moto_endpoint: str,
    key_files: tuple[Path, Path],
    start_replica: Callable[..., Replica],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    private, public = key_files
    assert train(stack, seed=1) == 1  # no signer configured: unsigned, as before
    registry = Registry(s3_client(), stack.bucket, "savings")
    assert registry.signature(1) is None
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_VERIFY_PUBLIC_KEY_FILE=str(public))
    wait_for(lambda: metric(api.url, "flywheel_model_reloads_total", model="savings", result="failure") >= 1, 60,
             what="unsigned v1 refused")  # fmt: skip
    assert serving_version(api.url) is None
    eventually(api.output, lambda out: "refusing v1" in out and "no manifest.sig" in out, 60,
               what="'refusing v1 ... no manifest.sig' logged")  # fmt: skip

    monkeypatch.setenv("FLYWHEEL_SIGNING_KEY_FILE", str(private))
    assert train(stack, seed=2, drift=1.0) == 2
    signature = registry.signature(2)
    assert signature is not None
    PublicKeyVerifier.from_pem_file(public).verify(statement("savings", 2, registry.manifest_bytes(2)), signature)
    assert [r["signed"] for r in summaries(registry)] == [False, True]  # `flywheel models` shows it
    wait_for(lambda: serving_version(api.url) == 2, 60, what="signed v2 served")


class _Spy(Registry):
    downloads: int = 0

    def model_bytes(self, version: int) -> bytes:
        self.downloads += 1
        return super().model_bytes(version)


def test_model_bytes_are_not_read_before_the_signature_checks_out(
    stack: Stack, key_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = key_files
    monkeypatch.setenv("FLYWHEEL_SIGNING_KEY_FILE", str(private))
    train(stack, seed=1)
    _replace_by_another_principal(stack, 1)
    registry = _Spy(s3_client(), stack.bucket, "savings")
    metrics = ServingMetrics(CollectorRegistry())
    host = ModelHost(registry, metrics, verifier=PublicKeyVerifier.from_pem_file(public))
    host.poll_once()
    assert host.current is None and host.state == "failed" and registry.downloads == 0
    assert metrics.reloads.labels(model="savings", result="failure")._value.get() == 1
