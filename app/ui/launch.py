"""Start the Streamlit UI headless (`flywheel ui`, the container's second command).

Streamlit runs as a child process through its own CLI (the stable interface); its configuration is the
flags below, so no `.streamlit/config.toml` is needed anywhere. SIGTERM and SIGINT are passed on to the
child, whose exit status becomes ours.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

MAIN = Path(__file__).resolve().with_name("main.py")

# The upload widget caps uploads at 256 MiB; the trainer takes at most FLYWHEEL_MAX_BATCH_BYTES (1/16 of its memory,
# 188 MiB on the default Lambda) and quarantines a bigger file with a "size" report naming the limit.
MAX_UPLOAD_MB = 256


def command(host: str, port: int) -> list[str]:
    """The `streamlit run` command line for app/ui/main.py on host:port."""
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
    ]  # fmt: skip


def run(host: str, port: int) -> int:
    """Run Streamlit until it exits; returns its exit status (128 + signal number when killed)."""
    proc = subprocess.Popen(command(host, port))

    def forward(signum: int, frame: FrameType | None) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
