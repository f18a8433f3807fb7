"""A request worker's metrics (flywheel/serving/worker_metrics.py): its changes reach the multiprocess files the
agent reads within a write interval and at exit, and the agent's /metrics sums them with its own series."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest

from flywheel.serving.worker_metrics import DIRECTORY_VARIABLE, merged_registry

WORKER = """
import sys, time
from flywheel.serving.worker_metrics import defer_worker_values
finish = defer_worker_values()
from prometheus_client import Counter, Gauge, Histogram
c = Counter("flywheel_t", "t", ["model"])
g = Gauge("flywheel_g", "g", multiprocess_mode="livesum")
h = Histogram("flywheel_h", "h", buckets=(0.1, 1.0))
c.labels(model="m").inc(3)
g.inc(); g.inc(); g.dec()
h.observe(0.5)
print("changed", flush=True)
sys.stdin.readline()  # the test reads the files meanwhile
c.labels(model="m").inc(4)
finish()  # at exit: the last changes written
"""


def _read(directory: Path, own: CollectorRegistry) -> str:
    return generate_latest(merged_registry(own, str(directory))).decode()


def test_worker_changes_reach_the_agent_within_an_interval_and_at_exit(tmp_path: Path) -> None:
    own = CollectorRegistry()
    Counter("flywheel_t", "t", ["model"], registry=own).labels(model="m").inc(1)  # the agent's own share
    env = {DIRECTORY_VARIABLE: str(tmp_path), "PATH": "/usr/bin:/bin"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, cwd=Path(__file__).parents[2])  # fmt: skip
    assert worker.stdout is not None and worker.stdin is not None
    assert worker.stdout.readline().strip() == "changed"
    deadline = time.monotonic() + 10
    expected = ('flywheel_t_total{model="m"} 4.0', "flywheel_g 1.0", 'flywheel_h_bucket{le="1.0"} 1.0')
    while not all(e in (text := _read(tmp_path, own)) for e in expected):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    worker.stdin.write("\n")
    worker.stdin.close()
    assert worker.wait(30) == 0
    assert 'flywheel_t_total{model="m"} 8.0' in _read(tmp_path, own)  # 1 + 3 + 4: the change made just before exit
