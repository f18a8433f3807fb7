"""Room for one more model? Every model this process holds, and every load in flight, counts.

The limit is the container's cgroup (v2, then v1); the usage measured there already includes every
loaded model. Loads that are under way are not fully in that figure yet, so each reserves its estimate
until it is served or refused: two models loading at once cannot both take the last of the room.
"""

from __future__ import annotations

import contextlib
import resource
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from flywheel.errors import FlywheelError

# an unpickled scikit-learn Pipeline takes a few times its compressed joblib size
EXPANSION = 6
HEADROOM_BYTES = 64 * 1024 * 1024


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_limit_and_usage() -> tuple[int | None, int | None]:
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit = _read_int(limit_path)
        if limit is not None and limit < 1 << 60:
            return limit, _read_int(usage_path)
    return None, None


def expanded(size_bytes: int) -> int:
    """What a model of `size_bytes` (joblib, compressed) takes in memory once loaded."""
    return size_bytes * EXPANSION


class MemoryBudget:
    """One per process, shared by every model host."""

    def __init__(
        self, read: Callable[[], tuple[int | None, int | None]] = cgroup_limit_and_usage, copies: int = 1
    ) -> None:
        self._read = read  # (limit, usage) in bytes; the cgroup in production
        self.copies = copies  # processes that hold each version: an agent and its request workers
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, int]] = {}  # model -> (version, estimated bytes) being served
        self._loading: dict[str, int] = {}  # model -> estimated bytes of the load under way

    @contextlib.contextmanager
    def reserve(self, model: str, version: int, size_bytes: int) -> Iterator[None]:
        """Hold room for loading `model` v`version` or raise before anything is loaded (no swap beats an
        OOM kill). The old version of `model` stays served meanwhile, so it counts as well."""
        need = expanded(size_bytes) * self.copies + HEADROOM_BYTES
        with self._lock:
            limit, usage = self._read()
            if limit is not None:
                used = usage if usage is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                pending = sum(b for name, b in self._loading.items() if name != model)
                if used + pending + need > limit:
                    held = ", ".join(f"{n} v{v}" for n, (v, _) in sorted(self._held.items())) or "none"
                    raise FlywheelError(
                        f"not enough memory for {model} v{version}: {used >> 20} MiB used (models held: {held}), "
                        f"{pending >> 20} MiB reserved by other loads, {need >> 20} MiB needed, "
                        f"limit {limit >> 20} MiB",
                        limit_bytes=limit,
                    )
            self._loading[model] = need
        try:
            yield
        finally:
            with self._lock:
                self._loading.pop(model, None)

    def hold(self, model: str, version: int, size_bytes: int) -> None:
        """Record the version `model` now serves (for the refusal message and `held()`)."""
        with self._lock:
            self._held[model] = (version, expanded(size_bytes) * self.copies)

    def release(self, model: str) -> None:
        """Forget what `model` (a slot: a model, or its rollout candidate) held."""
        with self._lock:
            self._held.pop(model, None)

    def held(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return dict(self._held)
