"""`flywheel traffic` against a real replica with a key store file, on moto's server, during a canary; and what
`flywheel apikey create` says about when a new key works."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flywheel.access import api_keys
from flywheel.cli.main import main
from flywheel.cli.models import actor
from flywheel.registry.store import Registry
from flywheel.release import rollout_actions
from flywheel.release.rollout_state import Thresholds
from flywheel.storage import s3_client
from tests import loopback
from tests.conftest import Stack, free_port
from tests.helpers import eventually, wait_for
from tests.integration.conftest import Replica, metric, train
from tests.integration.rollout_models import publish_derived

KEYS = 16  # at share 0.5, no key on one of the versions has a chance of 2 * 0.5**16 (3 in 100,000)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def canary(
    stack: Stack, moto_endpoint: str, start_replica: Callable[..., Replica], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Replica, Path]:  # fmt: skip
    """One replica checking keys from a store file (reloaded every second), serving savings v1 with a canary of v2
    at share 0.5; the CLI's environment names the same store."""
    train(stack)
    reg = Registry(s3_client(), stack.bucket, "savings")
    candidate = publish_derived(reg, 1, wrap=False)
    store = tmp_path / "api" / "keys.json"
    operator, record = api_keys.new_key("test-operator", "operator", "test")
    api_keys.FileStore(store).save([record])
    api = start_replica(stack.bucket, moto_endpoint, FLYWHEEL_API_AUTH="api-keys", FLYWHEEL_API_KEYS_FILE=str(store),
                        FLYWHEEL_API_KEYS_REFRESH_SECONDS="1")  # fmt: skip
    rollout_actions.begin(reg, candidate, actor="test", mode="canary", share=0.5,
                          thresholds=Thresholds(min_requests=10, min_seconds=0))  # fmt: skip

    def rollout() -> dict[str, Any]:
        r = loopback.get(api.url + "/v1/models/savings", headers={"Authorization": f"Bearer {operator}"}, timeout=10)
        return (r.json().get("rollout") if r.status_code == 200 else None) or {}

    wait_for(lambda: rollout().get("candidate") == candidate, 90, what="the candidate loaded")
    for name in ("FLYWHEEL_API_KEYS_SECRET_ID", "FLYWHEEL_API_URL", "FLYWHEEL_API_KEYS_REFRESH_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLYWHEEL_API_KEYS_FILE", str(store))
    return api, store


def test_traffic_from_several_keys_reaches_both_versions_and_reuses_its_keys(
    canary: tuple[Replica, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, store = canary
    args = ("traffic", "--url", api.url, "--model", "savings", "--rate", "40", "--duration", "3", "--keys", str(KEYS),
            "--every", "1", "--json")  # fmt: skip
    code, out, err = run(capsys, *args)
    assert code == 0, err
    first = json.loads(out)
    # every request answered, each by one version; the two versions' counts add up to what was sent
    assert first["sent"] == first["ok"] == 120 and first["errors"] == {}, first
    versions = first["versions"]
    assert set(versions) == {"1", "2"} and all(v["requests"] > 0 for v in versions.values()), versions
    assert sum(v["requests"] for v in versions.values()) == first["ok"]
    assert sum(v["keys"] for v in versions.values()) == KEYS  # sticky: each key stayed on one version
    assert first["rollout"]["mode"] == "canary" and first["rollout"]["candidate"] == 2
    assert first["p50_ms"] is not None and first["p99_ms"] >= first["p50_ms"]
    assert "1 s:" in err  # progress every second, on stderr

    # the replica counted the same requests per role
    def per_role() -> dict[str, float]:
        return {role: metric(api.url, "flywheel_rollout_requests_total", model="savings", role=role)
                for role in ("production", "candidate")}  # fmt: skip

    answered = {"production": versions["1"]["requests"], "candidate": versions["2"]["requests"]}
    eventually(per_role, lambda got: got == answered, 30, what=f"the replica's rollout counters to reach {answered}")

    records = api_keys.FileStore(store).load()
    made = [r for r in records if r.name.startswith("traffic-")]
    assert sorted(r.name for r in made) == sorted(f"traffic-{i}" for i in range(1, KEYS + 1))
    assert all(r.role == "client" and r.created_by == f"{actor()} via flywheel traffic" for r in made)
    kept = store.parent / "traffic-keys.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    plain = json.loads(kept.read_text())["keys"]
    assert {api_keys.digest(k) for k in plain.values()} == {r.sha256 for r in made}

    # a second run reuses the same keys: nothing new in the store, no waiting, the same keys on the same versions
    code, out, err = run(capsys, *args)
    assert code == 0, err
    second = json.loads(out)
    assert second["ok"] == 120 and "waiting" not in err
    assert api_keys.FileStore(store).load() == records
    assert {v: f["keys"] for v, f in second["versions"].items()} == {v: f["keys"] for v, f in versions.items()}

    # keys of one's own, in a file; the text summary
    key_file = tmp_path / "mine.keys"
    key_file.write_text("# two of them\n" + "\n".join(list(plain.values())[:2]) + "\n")
    code, out, err = run(capsys, "traffic", "--url", api.url, "--rate", "20", "--duration", "1", "--key-file",
                         str(key_file))  # fmt: skip
    assert code == 0, err
    assert f"savings at {api.url}: 20 requests at 20/s" in out and "2 keys" in out and "ok 20, errors 0" in out, out
    assert "canary rollout of v2 against v1, share 0.5" in out

    # configuration problems: one line each, exit 2
    code, _, err = run(capsys, "traffic", "--url", api.url, "--model", "nope", "--duration", "1", "--keys", "1")
    assert code == 2 and err.startswith("error: model 'nope'") and "404" in err and "savings" in err, err
    monkeypatch.delenv("FLYWHEEL_API_KEYS_FILE")
    code, _, err = run(capsys, "traffic", "--url", api.url, "--duration", "1")
    assert code == 2 and err.startswith("error: no key store") and "--key-file" in err, err


def test_traffic_to_an_api_that_does_not_answer_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLYWHEEL_BUCKET", "unused")  # no local stack's settings either
    monkeypatch.setenv("FLYWHEEL_API_KEYS_FILE", str(tmp_path / "keys.json"))
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "traffic", "--url", url, "--duration", "1")
    assert code == 2 and out == ""
    assert err.startswith(f"error: cannot reach the API at {url}") and "make up" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "keys.json").exists()  # no key made for an API that is not there
    monkeypatch.delenv("FLYWHEEL_API_URL", raising=False)
    code, _, err = run(capsys, "traffic", "--duration", "1")
    assert code == 2 and err.startswith("error: no API URL") and "--url" in err, err


def test_apikey_create_says_when_the_key_works(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLYWHEEL_BUCKET", "unused")  # no local stack's settings either
    monkeypatch.delenv("FLYWHEEL_API_KEYS_REFRESH_SECONDS", raising=False)
    store = str(tmp_path / "keys.json")
    code, out, _ = run(capsys, "apikey", "create", "--name", "checkout", "--file", store)
    lines = out.strip().splitlines()
    assert code == 0 and lines[-1].startswith(api_keys.PREFIX)  # the key stays the last line (scripts read it)
    assert "works once the replicas reload the store, within FLYWHEEL_API_KEYS_REFRESH_SECONDS (60 s unless" in out
    assert "until then it gets 401" in out
    monkeypatch.setenv("FLYWHEEL_API_KEYS_REFRESH_SECONDS", "3")  # what `flywheel up` gives its replicas
    code, out, _ = run(capsys, "apikey", "create", "--name", "other", "--file", store)
    assert code == 0 and "FLYWHEEL_API_KEYS_REFRESH_SECONDS (3 s in this environment)" in out


def test_apikey_create_and_revoke_wait_for_the_store_lock(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`apikey create` and `revoke` load and save under `<store>.lock`, as `flywheel traffic` does, so neither undoes
    what another did in between."""
    monkeypatch.setenv("FLYWHEEL_BUCKET", "unused")  # no local stack's settings either
    store = tmp_path / "keys.json"
    _, first = api_keys.new_key("first", "client", "test")
    api_keys.FileStore(store).save([first])
    fd = os.open(tmp_path / "keys.json.lock", os.O_RDWR | os.O_CREAT, 0o600)  # another command holding the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    codes: list[int] = []
    jobs = [threading.Thread(target=lambda: codes.append(main(["apikey", "revoke", first.id, "--file", str(store)]))),
            threading.Thread(target=lambda: codes.append(main(["apikey", "create", "--name", "late", "--file",
                                                               str(store)])))]  # fmt: skip
    for job in jobs:
        job.start()
    time.sleep(0.5)
    assert not codes and all(job.is_alive() for job in jobs)  # both waiting, nothing loaded yet
    _, theirs = api_keys.new_key("theirs", "client", "test")
    api_keys.FileStore(store).save([first, theirs])  # what the holder wrote
    os.close(fd)
    for job in jobs:
        job.join(30)
    capsys.readouterr()
    assert codes == [0, 0]
    assert sorted(r.name for r in api_keys.FileStore(store).load()) == ["late", "theirs"]  # nothing undone
