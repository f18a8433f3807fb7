"""The API keys `flywheel traffic` sends: its own client keys `traffic-1..N`, made once and reused, or a file of keys.

Only hashes are in the key store, so the plain keys `flywheel traffic` made are kept in a private file (0600):
`traffic-keys.json` beside a file store, or `$FLYWHEEL_STATE_DIR/traffic-keys-<hash of the secret id>.json` for a
Secrets Manager store. A later run reuses every key still in the store and makes only the missing ones. A new key
works once the replicas reload the store, so the clock starts only when the API accepts every key.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from flywheel.cli.apikeys import refresh_note
from flywheel.cli.traffic_run import api_get, error_text, say
from flywheel.errors import FlywheelError

PREFIX = "traffic-"
MADE_BY = "via flywheel traffic"  # the end of `created_by` on the keys made here: only those are ever replaced


def read_key_file(path: str) -> list[str]:
    """One key per line; blank lines and `#` comments skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise FlywheelError(f"cannot read the key file {path}: {e.strerror}") from e
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise FlywheelError(f"no keys in {path} (one key per line)")
    return keys


def kept_file(store: Any) -> Path:
    """Where the plain keys made for `store` are kept."""
    path = getattr(store, "path", None)
    if path is not None:
        return Path(path).parent / "traffic-keys.json"
    tag = hashlib.sha256(store.source.encode()).hexdigest()[:12]
    return Path(os.environ.get("FLYWHEEL_STATE_DIR", ".flywheel")) / f"traffic-keys-{tag}.json"


def _read_kept(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise FlywheelError(f"{path}: not JSON ({e}); delete it and run again to make new keys") from e
    keys = doc.get("keys") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in keys.items()} if isinstance(keys, dict) else {}


def _write_kept(path: Path, source: str, keys: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # a leftover could carry a looser mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"store": source, "keys": dict(sorted(keys.items()))}, out, indent=2)
    tmp.replace(path)


def traffic_keys(store: Any, count: int, actor: str) -> tuple[list[str], int]:
    """`count` client keys `traffic-1..count` from `store` and how many of them were made now (they work only after
    the replicas reload the store). A key is reused when its plain value is kept and its hash still in the store;
    a `traffic-i` key made here whose plain value was lost is replaced; one made otherwise is left alone (error)."""
    from flywheel.access import api_keys

    path = kept_file(store)
    kept = _read_kept(path)
    records = store.load()
    by_name = {r.name: r for r in records}
    hashes = {r.sha256 for r in records}
    keys, new = [], []
    for i in range(1, count + 1):
        name = f"{PREFIX}{i}"
        key = kept.get(name)
        if key is not None and api_keys.digest(key) in hashes:
            keys.append(key)
            continue
        other = by_name.get(name)
        if other is not None and not other.created_by.endswith(MADE_BY):
            raise FlywheelError(f"{store.source} has a key named {name!r} that `flywheel traffic` did not make "
                                f"(created by {other.created_by}); revoke it (flywheel apikey revoke {other.id}) or "
                                "pass --key-file")  # fmt: skip
        key, record = api_keys.new_key(name, "client", f"{actor} {MADE_BY}")
        kept[name] = key
        keys.append(key)
        new.append(record)
    if new:
        names = {r.name for r in new}
        _write_kept(path, store.source, kept)  # first: a key in the store is never one nobody holds
        store.save([*(r for r in records if r.name not in names), *new])
    return keys, len(new)


def wait_for_keys(client: httpx.Client, url: str, keys: list[str], new: int, timeout: float) -> None:
    """Until the API accepts every key (401 -> ask again), for at most `timeout` seconds."""
    began = time.monotonic()
    waiting = list(range(len(keys)))
    told = False
    while True:
        for i in list(waiting):
            r = api_get(client, url, "/v1/models", keys[i])
            if r.status_code == 200:
                waiting.remove(i)
            elif r.status_code != 401:
                raise FlywheelError(f"GET {url}/v1/models answered {r.status_code}: {error_text(r.content)}")
        if not waiting:
            if told:
                say(f"every key accepted after {time.monotonic() - began:.0f} s")
            return
        if time.monotonic() - began > timeout:
            raise FlywheelError(f"the API at {url} still refuses {len(waiting)} of {len(keys)} keys after "
                                f"{timeout:g} s (401): does it read the key store they are in? "
                                "(FLYWHEEL_API_KEYS_FILE / _SECRET_ID)")  # fmt: skip
        if not told:
            made = f"{new} new key(s) made; " if new else ""
            say(f"{made}waiting for the API to accept {len(waiting)} of {len(keys)} keys: it reloads its key "
                f"store {refresh_note()} (deadline {timeout:g} s)")  # fmt: skip
            told = True
        time.sleep(0.5)
