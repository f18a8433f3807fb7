"""The keys `flywheel traffic` makes and reuses (flywheel/cli/traffic_keys.py), on a key store file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from flywheel.access import api_keys
from flywheel.cli.traffic_keys import read_key_file, traffic_keys
from flywheel.errors import FlywheelError


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

    _, theirs = api_keys.new_key("traffic-3", "client", "carol")
    store.save([*store.load(), theirs])
    with pytest.raises(FlywheelError, match="'traffic-3' that `flywheel traffic` did not make"):
        traffic_keys(store, 3, "alice")
    assert theirs in store.load()


def test_a_key_file_holds_one_key_per_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# ours\nfwk_a_1\n\n  fwk_b_2  \n")
    assert read_key_file(str(path)) == ["fwk_a_1", "fwk_b_2"]
    path.write_text("# none\n")
    with pytest.raises(FlywheelError, match="no keys in"):
        read_key_file(str(path))
    with pytest.raises(FlywheelError, match="cannot read the key file"):
        read_key_file(str(tmp_path / "missing"))
