"""Is there room for a second model in memory? Reads the cgroup (v2, then v1) limit of this container."""

from __future__ import annotations

import resource
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


def ensure_room_for(model_size_bytes: int) -> None:
    """Raise before loading when the limit would be crossed (better no swap than an OOM kill)."""
    limit, usage = cgroup_limit_and_usage()
    if limit is None:
        return
    used = usage if usage is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    need = model_size_bytes * EXPANSION + HEADROOM_BYTES
    if used + need > limit:
        raise FlywheelError(
            f"not enough memory for a second model: {used >> 20} MiB used, {need >> 20} MiB needed, "
            f"limit {limit >> 20} MiB",
            limit_bytes=limit,
        )
