"""What the trainer tests share: invoking the handler as Lambda's SQS poller would, reading the registry."""

from __future__ import annotations

from typing import Any

import pytest

from lambdas.trainer import handler as trainer
from tests.conftest import Stack
from tests.helpers import FakeLambdaContext

MODELS = "models/savings/"


def fresh_handler(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The handler caches its settings and client: start each test from the environment it sets."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    trainer._settings.cache_clear()
    trainer._s3.cache_clear()


def invoke(stack: Stack, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Receive what S3 sent to the queue (or take `records`) and hand it to the handler."""
    records = stack.receive() if records is None else records
    assert records, "S3 sent no notification to the queue"
    result: dict[str, Any] = trainer.handler({"Records": records}, FakeLambdaContext())
    return result


def alias_version(stack: Stack) -> int | None:
    key = MODELS + "aliases/production.json"
    return stack.get_json(key)["version"] if key in stack.keys(MODELS) else None


def manifest(stack: Stack, version: int) -> dict[str, Any]:
    return stack.get_json(f"{MODELS}versions/{version:06d}/manifest.json")
