"""One function verifies then unpickles (flywheel/registry/model_loading.py); nothing else in the project unpickles.

The registry here is a small in-memory stand-in for the S3 one (the real one is exercised on moto's server in
tests/integration/test_trainer_verifies_production.py): what matters is the order of the reads.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from flywheel.errors import ModelVerificationError
from flywheel.registry.manifest import dump_model
from flywheel.registry.model_loading import open_version
from flywheel.registry.signing import KeyFileSigner, PublicKeyVerifier, SignatureError, generate_key_pair, statement

REPO = Path(__file__).resolve().parents[2]
#: the one module that may unpickle
LOADER = "flywheel/registry/model_loading.py"


class Exploit:
    """Unpickling this runs a command: what a forged model.joblib would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class Versions:
    """Version files by name, recording which were read."""

    name = "savings"

    def __init__(self, manifest: bytes, model: bytes, signature: bytes | None) -> None:
        self.files = {"manifest": manifest, "model": model, "signature": signature}
        self.reads: list[str] = []

    def manifest_bytes(self, version: int) -> bytes:
        self.reads.append("manifest")
        return self.files["manifest"] or b""

    def signature(self, version: int) -> bytes | None:
        self.reads.append("signature")
        return self.files["signature"]

    def model_bytes(self, version: int) -> bytes:
        self.reads.append("model")
        return self.files["model"] or b""


@pytest.fixture
def keys(tmp_path: Path) -> tuple[KeyFileSigner, PublicKeyVerifier]:
    private, public = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    generate_key_pair(private, public)
    return KeyFileSigner(private), PublicKeyVerifier.from_pem_file(public)


def _version(model: bytes, signer: KeyFileSigner | None, sha: str | None = None) -> Versions:
    manifest = json.dumps({"sha256": sha or hashlib.sha256(model).hexdigest(), "version": 3}).encode()
    signature = signer.sign(statement("savings", 3, manifest)) if signer else None
    return Versions(manifest, model, signature)


def test_a_signed_version_loads(keys: tuple[KeyFileSigner, PublicKeyVerifier]) -> None:
    signer, verifier = keys
    opened = open_version(_version(dump_model({"a": 1}), signer), 3, verifier)  # type: ignore[arg-type]
    assert opened.signed and opened.load_model() == {"a": 1}


def test_an_unsigned_or_forged_version_is_refused_before_its_model_is_downloaded(
    keys: tuple[KeyFileSigner, PublicKeyVerifier], tmp_path: Path
) -> None:
    _, verifier = keys
    marker = tmp_path / "pwned"
    evil = dump_model(Exploit(marker))
    other = tmp_path / "other.pem"  # a key the verifier does not trust
    generate_key_pair(other, tmp_path / "other.pub.pem")
    for forged, why in ((_version(evil, None), "no manifest.sig"), (_version(evil, KeyFileSigner(other)), "verify")):
        with pytest.raises(SignatureError, match=why):
            open_version(forged, 3, verifier)  # type: ignore[arg-type]
        assert "model" not in forged.reads
    assert not marker.exists()


def test_a_model_that_is_not_the_one_the_signed_manifest_names_is_never_unpickled(
    keys: tuple[KeyFileSigner, PublicKeyVerifier], tmp_path: Path
) -> None:
    signer, verifier = keys
    marker = tmp_path / "pwned"
    swapped = _version(dump_model({"a": 1}), signer)
    swapped.files["model"] = dump_model(Exploit(marker))  # model.joblib replaced after signing
    opened = open_version(swapped, 3, verifier)  # type: ignore[arg-type]
    with pytest.raises(ModelVerificationError, match="sha256"):
        opened.load_model()
    assert not marker.exists()


def test_without_a_verifier_the_sha256_still_guards_the_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    version = _version(dump_model(Exploit(marker)), None, sha="0" * 64)
    with pytest.raises(ModelVerificationError, match="sha256"):
        open_version(version, 3, None).load_model()  # type: ignore[arg-type]
    assert not marker.exists()
    broken = Versions(b"{not json", b"", None)
    with pytest.raises(ModelVerificationError, match="not a manifest"):
        open_version(broken, 3, None)  # type: ignore[arg-type]


#: the one other place: a replica's agent hands its request workers the versions it verified through the loader,
#: and reads their reports with an unpickler that admits plain data and arrays only (tests/unit/test_relay.py)
RELAY = "flywheel/serving/relay.py"
UNPICKLERS = {"joblib": {"load"}, "pickle": {"load", "loads", "Unpickler"}, "_pickle": {"load", "loads"},
              "cloudpickle": {"load", "loads"}, "dill": {"load", "loads"}, "pandas": {"read_pickle"},
              "pd": {"read_pickle"}}  # fmt: skip


def _unpickling(path: Path) -> list[str]:
    """Calls (and imports) that unpickle: `joblib.load(...)`, `pickle.loads(...)`, `from joblib import load`..."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in UNPICKLERS.get(node.value.id, set()):
                found.append(f"{node.value.id}.{node.attr} (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and node.module in UNPICKLERS:
            found += [f"from {node.module} import {a.name} (line {node.lineno})" for a in node.names
                      if a.name in UNPICKLERS[node.module]]  # fmt: skip
    return found


def test_nothing_but_the_loader_unpickles() -> None:
    """A lint: every reader of a model goes through open_version (trainer, replicas, UI, CLI, bench, tests)."""
    offenders = {}
    for folder in ("flywheel", "app", "lambdas", "bench", "scripts", "cdk", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in (LOADER, RELAY) or "node_modules" in path.parts:
                continue
            if hits := _unpickling(path):
                offenders[rel] = hits
    assert offenders == {}, "unpickle only through flywheel.registry.model_loading.open_version"
    assert _unpickling(REPO / LOADER), "the loader itself must be where unpickling happens"
