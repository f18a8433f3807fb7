"""The API keys `flywheel traffic` sends: its own client keys `traffic-1..N`, made once and reused, or a file of keys.

Only hashes are in the key store, so the plain keys `flywheel traffic` made are kept in a private file (0600):
`traffic-keys.json` beside a file store, or `traffic-keys-<hash of the secret id>.json` in this user's state folder
for a Secrets Manager store (`$FLYWHEEL_STATE_DIR`, else `$XDG_STATE_HOME/flywheel`, `~/.local/state/flywheel`), never
the current folder. That file is read only if it is a regular file of this user's that no one else can read or write.

A later run reuses every key still in the store and makes only the missing ones, replacing only keys this actor made
with `flywheel traffic` (`created_by` "<actor> via flywheel traffic", matched whole): where someone else's key holds
the name `traffic-i`, its key is `traffic-<actor>-i` instead. The store is updated under its lock (a file store) or
version check (a secret): see flywheel/access/api_keys.py, update(). A new key works once the replicas reload the
store, so the clock starts only when the API accepts every key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from flywheel.cli.apikeys import refresh_note
from flywheel.cli.traffic_run import api_get, error_text, say
from flywheel.errors import FlywheelError

if TYPE_CHECKING:
    from flywheel.access.api_keys import KeyRecord

PREFIX = "traffic-"
MADE_BY = "via flywheel traffic"  # `created_by` is "<actor> via flywheel traffic": only this actor's are replaced


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


def state_dir() -> Path:
    """This user's state folder: $FLYWHEEL_STATE_DIR, else $XDG_STATE_HOME/flywheel (~/.local/state/flywheel)."""
    named = os.environ.get("FLYWHEEL_STATE_DIR")
    if named:
        return Path(named)
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):  # unset, or relative (which the XDG spec says to ignore): never the current folder
        base = str(Path.home() / ".local" / "state")
    return Path(base) / "flywheel"


def kept_file(store: Any) -> Path:
    """Where the plain keys made for `store` are kept."""
    path = getattr(store, "path", None)
    if path is not None:
        return Path(path).parent / "traffic-keys.json"
    tag = hashlib.sha256(store.source.encode()).hexdigest()[:12]
    return state_dir() / f"traffic-keys-{tag}.json"


def _unsafe(st: os.stat_result) -> str | None:
    """What makes a kept file unfit to hold keys, or None."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file: delete it"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()}): delete it"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        how = "readable" if mode & 0o044 else "writable" if mode & 0o022 else "open"
        return f"is {how} by others (mode {mode:04o}): chmod 600 it or delete it"
    return None


def _read_kept(path: Path) -> dict[str, str]:
    """The kept plain keys by name; {} when there is no file. Never through a symlink, never blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (EMLINK on the BSDs)
            raise FlywheelError(f"{path} is a symlink: delete it (the keys are kept only in a file of its own)") from e
        raise FlywheelError(f"cannot read {path}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        problem = _unsafe(os.fstat(f.fileno()))
        if problem:
            raise FlywheelError(f"{path} {problem}")
        text = f.read()
    try:
        doc = json.loads(text)
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


def _slug(actor: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", actor.lower()).strip("-")[:32] or hashlib.sha256(actor.encode()).hexdigest()[:8]


def _choose(
    records: list[KeyRecord], kept: dict[str, str], count: int, actor: str, source: str
) -> tuple[list[str], list[KeyRecord], set[str]]:
    """The keys for `traffic-1..count` (adding the new ones to `kept`), the new records, and the ids of the records
    they replace (only this actor's, under the same names: their plain values are lost)."""
    from flywheel.access import api_keys

    mine = f"{actor} {MADE_BY}"
    hashes = {r.sha256 for r in records}
    keys: list[str] = []
    new: list[KeyRecord] = []
    replaced: set[str] = set()
    for i in range(1, count + 1):
        names = (f"{PREFIX}{i}", f"{PREFIX}{_slug(actor)}-{i}")
        key = next((kept[n] for n in names if n in kept and api_keys.digest(kept[n]) in hashes), None)
        if key is not None:
            keys.append(key)
            continue
        held = [r for r in records if r.name in names]
        others = [r for r in held if r.created_by != mine]
        free = [n for n in names if not any(r.name == n for r in others)]
        if not free:
            by = "; ".join(f"{r.name} by {r.created_by or '?'} (id {r.id})" for r in others)
            raise FlywheelError(f"{source}: {' and '.join(names)} are taken by keys {actor!r} did not make ({by}); "
                                "pass --key-file, or revoke one of them (flywheel apikey revoke ID)")  # fmt: skip
        replaced |= {r.id for r in held if r.created_by == mine}
        key, record = api_keys.new_key(free[0], "client", mine)
        for n in names:
            kept.pop(n, None)
        kept[free[0]] = key
        keys.append(key)
        new.append(record)
    return keys, new, replaced


def traffic_keys(store: Any, count: int, actor: str) -> tuple[list[str], int]:
    """`count` client keys from `store` and how many of them were made now (they work only after the replicas reload
    the store). A key is reused when its plain value is kept and its hash still in the store; otherwise a new one is
    made, replacing (by id) only a key of the same name that this actor made here before and whose plain value is
    lost; see the module's docstring for names someone else's key holds."""
    from flywheel.access import api_keys

    path = kept_file(store)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    result: list[tuple[list[str], int]] = []

    def change(records: list[KeyRecord]) -> list[KeyRecord] | None:
        kept = _read_kept(path)
        keys, new, replaced = _choose(records, kept, count, actor, store.source)
        result.append((keys, len(new)))
        if not new:
            return None
        _write_kept(path, store.source, kept)  # first: a key in the store is never one nobody holds
        return [*(r for r in records if r.id not in replaced), *new]

    with api_keys.file_lock(path.with_name(path.name + ".lock")):  # one run at a time per kept file
        api_keys.update(store, change)
    return result[-1]


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
