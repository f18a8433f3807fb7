"""The trainer never unpickles a production version it cannot verify (issue 22, row 1), on moto's S3 and SQS.

Someone with write access under models/ puts an unsigned version 9 whose model.joblib runs a command when
unpickled (with its own sha256 in the manifest) and points the production alias at it. The next upload's
retrain, through the Lambda handler, must not run that command: it compares the candidate with the baseline only,
says why in the manifest, emits ProductionUnverified (the alarm's metric) and publishes a signed version.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from flywheel.registry.manifest import dump_model
from flywheel.registry.signing import generate_key_pair
from flywheel.registry.store import Registry
from flywheel.storage import s3_client
from tests.conftest import Stack
from tests.helpers import csv_bytes
from tests.integration.trainer_helpers import alias_version, fresh_handler, invoke, manifest


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _plant_unsigned_version(stack: Stack, version: int, marker: Path) -> None:
    registry = Registry(s3_client(), stack.bucket, "savings")
    forged = registry.manifest(1) | {"version": version}
    model = dump_model(Exploit(marker))
    forged["sha256"], forged["size_bytes"] = hashlib.sha256(model).hexdigest(), len(model)
    stack.put(registry.version_key(version, "model.joblib"), model)
    stack.put(registry.version_key(version, "manifest.json"), json.dumps(forged).encode())
    registry.move_alias(version, registry.alias(), actor="someone", reason="not the trainer")


def test_an_unsigned_production_is_never_unpickled_and_the_gate_uses_the_baseline(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    private = tmp_path / "signing" / "key.pem"
    generate_key_pair(private, tmp_path / "signing" / "key.pub.pem")
    fresh_handler(monkeypatch, FLYWHEEL_SIGNING_KEY_FILE=str(private), FLYWHEEL_ESTIMATORS="linear",
                  FLYWHEEL_CV_FOLDS="2")  # fmt: skip
    stack.put("data/batch-1.csv", csv_bytes(1500, seed=1))
    invoke(stack)
    assert alias_version(stack) == 1
    marker = tmp_path / "the-command-ran"
    _plant_unsigned_version(stack, 9, marker)
    assert alias_version(stack) == 9
    capsys.readouterr()

    stack.put("data/batch-2.csv", csv_bytes(1500, seed=2))
    assert invoke(stack) == {"batchItemFailures": []}

    assert not marker.exists(), "the trainer unpickled a version it never verified"
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m["ProductionUnverified"] for m in emitted if "ProductionUnverified" in m] == [[1.0]]  # EMF: a list
    new = manifest(stack, 10)
    reasons = " ".join(new["gate"]["reasons"])
    assert "production signature not verified: v9" in reasons and "no manifest.sig" in reasons, reasons
    assert new["metrics"]["production"] is None  # compared against the baseline only
    registry = Registry(s3_client(), stack.bucket, "savings")
    assert registry.signature(10) is not None  # what the trainer publishes is signed, as always
    assert alias_version(stack) == 10  # it beat the baseline: production is a verified version again
    assert not marker.exists()
