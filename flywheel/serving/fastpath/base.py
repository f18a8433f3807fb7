"""Shared pieces of the fast path: its output, the 'unsupported' signal, and lazy numba compilation.

numba is imported only when a kernel is first needed, so the trainer (whose Lambda image has no numba)
never imports it. Compiled kernels are cached on disk (`cache=True`). numba's default cache sits in
`__pycache__` beside this file; on a read-only root filesystem (the API pods) that is not writable, so,
unless NUMBA_CACHE_DIR is already set, it points at `<tempdir>/flywheel-numba` (TMPDIR, default /tmp: an
emptyDir in the pods). A cold cache costs one compile per process at load time, before the swap.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
ColumnsIn = Mapping[str, Sequence[Any] | np.ndarray]
_lock = threading.Lock()


class Unsupported(Exception):
    """This Pipeline shape has no fast path; the message says why."""


@dataclass(frozen=True)
class Output:
    """What the Pipeline path returns: predictions, and class probabilities for classifiers."""

    predictions: np.ndarray
    probabilities: np.ndarray | None


def cache_dir() -> str:
    """Where numba caches compiled kernels: NUMBA_CACHE_DIR, set here when the default is not writable."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        default = Path(__file__).parent / "__pycache__"
        try:
            default.mkdir(exist_ok=True)
            writable = os.access(default, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            os.environ["NUMBA_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "flywheel-numba")
            log.info("numba cache: %s (the package directory is read-only)", os.environ["NUMBA_CACHE_DIR"])
    return os.environ.get("NUMBA_CACHE_DIR") or str(Path(__file__).parent / "__pycache__")


def load_compiler() -> None:
    """Import numba now: a process that forks request workers (app/worker_zygote.py) starts each with it loaded."""
    cache_dir()  # before numba reads its configuration
    import numba

    del numba


def kernel(fn: Callable[..., None]) -> Callable[[], Callable[..., None]]:
    """A getter for `fn` compiled with numba (nogil, cached), compiled on first use, not at import."""
    compiled: list[Callable[..., None]] = []

    def get() -> Callable[..., None]:
        if not compiled:
            with _lock:
                if not compiled:
                    cache_dir()  # before numba reads its configuration
                    import numba  # imported here only: numba is in the API image, not the trainer's

                    compiled.append(numba.njit(nogil=True, cache=True)(fn))
        return compiled[0]

    return get
