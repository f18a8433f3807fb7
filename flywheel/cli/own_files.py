"""Files only this user could have written: how the CLI and `flywheel up` read and write the local stack's
announcements (`stack.json`, the record of running stacks, `up.lock`) without following another user's symlink
or trusting another user's file.

A file is trusted when it is a regular file (not a symlink), owned by this user, and neither group- nor
world-writable, in a folder with the same properties. Writes go to a fresh temporary file (`O_EXCL`,
`O_NOFOLLOW`, 0600) renamed over the target, so a reader never sees half a file and a planted link is replaced,
not followed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def untrusted(st: os.stat_result) -> str:
    """Why a file or folder with this status is not to be trusted ("" when it is)."""
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by you"
    if st.st_mode & WRITABLE_BY_OTHERS:
        return f"writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def trusted_dir(path: Path) -> str:
    """Why folder `path` is not to be trusted ("" when it is; a symlinked folder is judged by its target)."""
    try:
        st = path.stat()
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    return untrusted(st) if stat.S_ISDIR(st.st_mode) else "not a folder"


def read_own(path: Path) -> bytes:
    """The bytes of `path`, a file of this user's in a folder of this user's; OSError naming why not."""
    why = trusted_dir(path.parent)
    if why:
        raise PermissionError(f"{path.parent}: {why}")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        why = "not a regular file" if not stat.S_ISREG(st.st_mode) else untrusted(st)
        if why:
            raise PermissionError(f"{path}: {why}")
        return f.read(1 << 20)


def write_own(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, mode 0600, atomically; a symlink at `path` is replaced, never followed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """Make folder `path` (0700) when missing; OSError when it exists and another user could write in it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    why = trusted_dir(path)
    if why:
        raise PermissionError(f"{path}: {why}")
    return path


def lock_held(path: Path) -> bool:
    """Another process holds the `flock` on `path` (how a running `flywheel up` shows itself)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a lock we took
    return False
