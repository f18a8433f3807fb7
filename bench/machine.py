"""How steady the machine under a benchmark is: the same CPU loop timed in short windows, while nothing else runs.

A latency tail measured at 80% of a server's capacity is only as steady as the CPU it runs on. On a shared VM the
speed of a core can change by a quarter from one tenth of a second to the next (a neighbour on the host, the
hypervisor): the server then runs at more than 100% of what it has for that moment, and requests queue. This probe
prints the spread of the loop's rate over `seconds` in `window` slices, relative to the median slice (100%), so a
run's open-loop figures can be read against the machine they came from (docs/serving.md, "Open loop").

    python bench/machine.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
IDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")


def steadiness(seconds: float = 5.0, window: float = 0.1) -> dict[str, float]:
    """The loop's rate in each `window` as a share of the median window's: min, 5th percentile, max (1.0 = median)."""
    rates: list[float] = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        n = 0
        while time.perf_counter() - start < window:
            for _ in range(1000):
                pass
            n += 1
        rates.append(n / (time.perf_counter() - start))
    median = statistics.median(rates)
    ranked = sorted(r / median for r in rates)
    return {"windows": len(ranked), "min": ranked[0], "p5": ranked[len(ranked) // 20], "max": ranked[-1]}


def idle_settings() -> str:
    """The guest's cpuidle driver and, with haltpoll, how long an idle vCPU polls before it halts."""
    parts = []
    for label, path in (("cpuidle", IDLE_DRIVER), ("guest_halt_poll_ns", HALT_POLL)):
        try:
            parts.append(f"{label} {path.read_text().strip()}")
        except OSError:
            continue
    return ", ".join(parts) or "cpuidle unknown"


def describe(seconds: float = 5.0) -> str:
    s = steadiness(seconds)
    return (f"machine: a fixed CPU loop ran at {s['min']:.0%}-{s['max']:.0%} of its median speed in "
            f"{s['windows']:.0f} windows of 100 ms (p5 {s['p5']:.0%}); {idle_settings()}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    print(describe(parser.parse_args().seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
