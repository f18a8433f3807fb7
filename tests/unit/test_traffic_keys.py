"""The keys `flywheel traffic` makes and reuses (flywheel/cli/traffic_keys.py), on a key store file or a secret (a
fake Secrets Manager client); where their plain values are kept and when that file is refused; the store's lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.access import api_keys
from flywheel.cli.traffic_keys import read_key_file, traffic_keys
from flywheel.errors import FlywheelError


class FakeSecrets:
    """One secret, as much of a Secrets Manager client as the store uses: every put makes a new VersionId."""

    def __init__(self) -> None:
        self.value, self.version = '{"keys": []}', "v0"

    def get_secret_value(self, **_: Any) -> dict[str, str]:
        return {"SecretString": self.value, "VersionId": self.version}

    def put_secret_value(self, **kw: Any) -> None:
        self.value, self.version = kw["SecretString"], f"v{int(self.version[1:]) + 1}"


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging: a blocked open() is interrupted by the alarm."""

    def fire(*_: object) -> None:
        raise TimeoutError(f"still blocked after {seconds} s")

    before = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def _kept(tmp_path: Path) -> tuple[api_keys.FileStore, Path]:
    """A file store with alice's two traffic keys, and the file their plain values are kept in."""
    store = api_keys.FileStore(tmp_path / "keys.json")
    traffic_keys(store, 2, "alice")
    return store, tmp_path / "traffic-keys.json"


def test_keys_are_made_once_kept_privately_and_reused(tmp_path: Path) -> None:
    store = api_keys.FileStore(tmp_path / "api" / "keys.json")
    keys, made = traffic_keys(store, 3, "alice")
    assert made == 3 and len(set(keys)) == 3
    kept = tmp_path / "api" / "traffic-keys.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    records = store.load()
    assert [r.name for r in records] == ["traffic-1", "traffic-2", "traffic-3"]
    assert [api_keys.digest(k) for k in keys] == [r.sha256 for r in records]
    assert all(r.role == "client" and r.created_by == "alice via flywheel traffic" for r in records)

    assert traffic_keys(store, 3, "bob") == (keys, 0)  # reused: nothing new
    assert store.load() == records
    more, made = traffic_keys(store, 5, "bob")  # more keys: only the missing ones are made
    assert made == 2 and more[:3] == keys and len(store.load()) == 5


def test_a_lost_or_revoked_key_is_replaced_but_someone_elses_key_is_left_alone(tmp_path: Path) -> None:
    store = api_keys.FileStore(tmp_path / "keys.json")
    keys, _ = traffic_keys(store, 2, "alice")
    kept = tmp_path / "traffic-keys.json"
    doc = json.loads(kept.read_text())
    del doc["keys"]["traffic-1"]  # its plain value lost: the key in the store is of no use to anyone
    kept.write_text(json.dumps(doc))
    store.save([r for r in store.load() if r.name != "traffic-2"])  # revoked
    again, made = traffic_keys(store, 2, "alice")
    assert made == 2 and not set(again) & set(keys)
    assert sorted(r.name for r in store.load()) == ["traffic-1", "traffic-2"]  # replaced, not duplicated

    _, theirs = api_keys.new_key("traffic-3", "client", "carol")  # `flywheel apikey create --name traffic-3`
    store.save([*store.load(), theirs])
    three, made = traffic_keys(store, 3, "alice")
    assert made == 1 and three[:2] == again and theirs in store.load()  # carol's key left alone, alice's named apart
    assert sorted(r.name for r in store.load()) == ["traffic-1", "traffic-2", "traffic-3", "traffic-alice-3"]


def test_another_actors_traffic_key_is_never_removed_or_replaced_and_records_go_by_id(tmp_path: Path) -> None:
    store = api_keys.FileStore(tmp_path / "keys.json")
    _, bobs = api_keys.new_key("traffic-1", "client", "bob via flywheel traffic")  # bob ran it from his machine
    _, stale = api_keys.new_key("traffic-1", "client", "alice via flywheel traffic")  # alice's, its plain value lost
    store.save([bobs, stale])
    keys, made = traffic_keys(store, 3, "alice")
    records = store.load()
    assert made == 3 and bobs in records and stale not in records  # by id, not by name
    mine = {r.name: r for r in records if r.created_by == "alice via flywheel traffic"}
    assert sorted(mine) == ["traffic-2", "traffic-3", "traffic-alice-1"]
    assert [api_keys.digest(k) for k in keys] == [mine[n].sha256 for n in ("traffic-alice-1", "traffic-2",
                                                                            "traffic-3")]  # fmt: skip
    assert traffic_keys(store, 3, "alice") == (keys, 0) and store.load() == records  # reused, nothing replaced

    # both names taken by keys alice did not make: refused, the store untouched
    _, other = api_keys.new_key("traffic-alice-4", "client", "alice")
    _, fourth = api_keys.new_key("traffic-4", "client", "bob via flywheel traffic")
    store.save([*records, other, fourth])
    with pytest.raises(FlywheelError, match=r"traffic-4 and traffic-alice-4 are taken by keys 'alice' did not make"):
        traffic_keys(store, 4, "alice")
    assert store.load() == [*records, other, fourth]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620], ids=oct)
def test_a_kept_file_others_can_read_or_write_is_refused_by_name(tmp_path: Path, mode: int) -> None:
    store, kept = _kept(tmp_path)
    before = store.load()
    kept.chmod(mode)
    what = "writable" if mode == 0o620 else "readable"
    with pytest.raises(
        FlywheelError, match=f"^{kept} is {what} by others \\(mode {mode:04o}\\): chmod 600 it or delete it$"
    ):
        traffic_keys(store, 3, "alice")
    assert store.load() == before  # nothing made or replaced


def test_a_kept_file_owned_by_someone_else_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, kept = _kept(tmp_path)
    if os.geteuid() == 0:
        os.chown(kept, 65534, 65534)  # nobody's
    else:  # cannot give the file away: be someone else instead
        uid = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    with pytest.raises(FlywheelError, match=f"^{kept} is owned by uid [0-9]+, not by you"):
        traffic_keys(store, 2, "alice")


def test_a_kept_file_that_is_a_symlink_or_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    store, kept = _kept(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    kept.unlink()
    kept.symlink_to(fifo)
    with deadline(5), pytest.raises(FlywheelError, match=f"^{kept} is a symlink"):
        traffic_keys(store, 2, "alice")
    kept.unlink()
    os.mkfifo(kept, 0o600)
    with deadline(5), pytest.raises(FlywheelError, match=f"^{kept} is not a regular file"):
        traffic_keys(store, 2, "alice")


def test_keys_for_a_secret_are_kept_in_the_users_state_folder_not_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "some-project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.delenv("FLYWHEEL_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:api-keys"
    store = api_keys.SecretStore(FakeSecrets(), secret)
    keys, made = traffic_keys(store, 2, "alice")
    tag = hashlib.sha256(f"secret {secret}".encode()).hexdigest()[:12]
    kept = tmp_path / "state" / "flywheel" / f"traffic-keys-{tag}.json"
    assert made == 2 and set(json.loads(kept.read_text())["keys"].values()) == set(keys)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert list(project.iterdir()) == []  # nothing in the folder it ran from
    assert traffic_keys(store, 2, "alice") == (keys, 0)

    monkeypatch.setenv("XDG_STATE_HOME", "relative")  # the XDG spec says to ignore it: never under the cwd
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    traffic_keys(store, 2, "alice")
    assert (tmp_path / "home" / ".local" / "state" / "flywheel" / kept.name).is_file()
    monkeypatch.setenv("FLYWHEEL_STATE_DIR", str(tmp_path / "named"))  # named: used as it is
    traffic_keys(store, 2, "alice")
    assert (tmp_path / "named" / kept.name).is_file() and list(project.iterdir()) == []


def test_a_secret_changed_since_it_was_loaded_is_not_overwritten() -> None:
    client = FakeSecrets()
    store = api_keys.SecretStore(client, "keys")
    _, record = api_keys.new_key("checkout", "client", "alice")
    _, theirs = api_keys.new_key("billing", "client", "bob")

    def meanwhile(records: list[api_keys.KeyRecord]) -> list[api_keys.KeyRecord]:
        api_keys.SecretStore(client, "keys").save([theirs])  # someone else's `apikey create`, in between
        return [*records, record]

    with pytest.raises(FlywheelError, match="changed while this command ran"):
        api_keys.update(store, meanwhile)
    assert store.load() == [theirs]
    api_keys.update(store, lambda records: [*records, record])
    assert store.load() == [theirs, record]


def test_traffic_keys_wait_for_the_store_lock_so_a_concurrent_revoke_is_not_undone(tmp_path: Path) -> None:
    store, _ = _kept(tmp_path)
    one, two = store.load()
    fd = os.open(tmp_path / "keys.json.lock", os.O_RDWR | os.O_CREAT, 0o600)  # `apikey revoke` holding the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    done: list[tuple[list[str], int]] = []
    run = threading.Thread(target=lambda: done.append(traffic_keys(store, 3, "alice")))
    run.start()
    time.sleep(0.5)
    assert run.is_alive() and not done  # waiting for the lock, nothing loaded yet
    store.save([two])  # the revoke's write
    os.close(fd)
    run.join(10)
    assert done and done[0][1] == 2  # traffic-1 (revoked) and traffic-3 made
    records = store.load()
    assert one not in records and two in records and sorted(r.name for r in records) == [
        "traffic-1", "traffic-2", "traffic-3"]  # fmt: skip


def test_a_key_file_holds_one_key_per_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# ours\nfwk_a_1\n\n  fwk_b_2  \n")
    assert read_key_file(str(path)) == ["fwk_a_1", "fwk_b_2"]
    path.write_text("# none\n")
    with pytest.raises(FlywheelError, match="no keys in"):
        read_key_file(str(path))
    with pytest.raises(FlywheelError, match="cannot read the key file"):
        read_key_file(str(tmp_path / "missing"))
