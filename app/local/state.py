"""State that survives a restart: the embedded S3 is mirrored to a folder and restored at start.

moto keeps everything in memory, so `flywheel up` syncs the bucket's current objects to
`<state-dir>/s3/<bucket>/` every few seconds and at shutdown, and puts them back before it wires the
notification (so a restore never triggers a retrain). Noncurrent versions are not kept locally.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from flywheel.cli.own_files import private_dir, untrusted
from flywheel.cli.stack_env import LOCK_FILE, read_stack

log = logging.getLogger("flywheel.up")


def keep_private(state_dir: Path) -> None:
    """The state directory holds API keys, the signing key, sign-in tokens, the data and the models: only its owner
    may read it. It is made 0700, what an earlier run left in it is tightened (directories 0700, files 0600), and
    this process and the ones it starts create files 0600 from now on (umask 077)."""
    os.umask(0o077)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    for root, dirs, files in os.walk(state_dir):
        for name in dirs:
            if not Path(root, name).is_symlink():  # os.walk does not enter it; chmod would follow it out
                Path(root, name).chmod(0o700)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(0o600)


class StackRunning(RuntimeError):
    """Another `flywheel up` runs from this state directory."""


class StateLock:
    """One `flywheel up` per state directory: an exclusive lock on `<state>/up.lock`, held while `up` runs and
    released by the kernel however it ends. Taken before anything is touched, so a second `up` on the same
    state changes nothing of the running one's (data, logs, stack.json)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        private_dir(self.state_dir)  # 0700 when new; refused when another user could write in it
        path = self.state_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)  # a planted link: refused
        why = untrusted(os.fstat(fd))
        if why:
            os.close(fd)
            raise StackRunning(f"{path}: {why}; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            running = read_stack(self.state_dir)
            where = running.describe() if running else f"{self.state_dir} (pid {holder}, still starting)"
            raise StackRunning(
                f"a local stack is already running from {where}: use it (the CLI finds it), stop it first "
                "(Ctrl-C in its terminal), or start another with --state-dir DIR and other ports"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


class Mirror:
    def __init__(self, s3: Any, bucket: str, root: Path) -> None:
        self.s3, self.bucket = s3, bucket
        self.dir = root / "s3" / bucket
        self.index_path = root / "s3" / f"{bucket}.index.json"
        self.index: dict[str, str] = json.loads(self.index_path.read_text()) if self.index_path.exists() else {}
        # until every saved object is back in the bucket, a sync must not take a missing one for a deleted one
        self.restored = not self.index

    def restore(self) -> int:
        """Upload every mirrored object (data first, then models, alias last); returns the count."""
        # a trainer lock from a run that was killed must not come back
        keys = [k for k in self.index if not k.endswith("/lock.json")]
        keys.sort(key=lambda k: (k.endswith("aliases/production.json"), k))
        for key in keys:
            path = self.dir / key
            if path.is_file():
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())
        self.restored = True
        if keys:
            self.sync()  # new ETags are what the next sync compares against
        return len(keys)

    def sync(self) -> None:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        live = {o["Key"]: o["ETag"] for p in pages for o in p.get("Contents", [])}
        for key, etag in live.items():
            if self.index.get(key) != etag:
                path = self.dir / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        if not self.restored:  # an interrupted restore: keep every saved file, and the index that lists them
            return
        for key in set(self.index) - set(live):
            (self.dir / key).unlink(missing_ok=True)
        self.index = live
        self.index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(live, indent=0))
        tmp.replace(self.index_path)
