"""Open-loop latency: requests at a fixed arrival rate, each timed from when it was due (wrk2's method, on stock wrk).

Closed-loop wrk (c connections, each sending its next request when the previous one is answered) slows down with
the server, so the requests a stalled server would have received are never sent and never timed: coordinated
omission, which hides the latency users see below saturation. Here every connection sends on a fixed schedule
(together: `rate` requests a second, spread evenly), and a request whose connection was still busy when it fell
due is timed from the moment it was due, so a stall counts for every request it delayed, as in wrk2.

The load generator is Debian's `wrk` (the closed-loop runs' tool, installed with apt-get when missing) driven by
the Lua script below: one connection per wrk thread, so each thread's script knows which request it is timing;
its LuaJIT reads CLOCK_MONOTONIC, and wrk's own delay() hook paces the sends. A send goes out within about 1 ms
of its due time (wrk's timers count milliseconds); while the connection is idle that jitter is not counted.
`late %` is the share of requests whose connection was still busy when they fell due (they wait on the client
side, not in the server's queue): high, the server was not keeping up with the rate, or too few connections for
its latency (`--open-conns`).

Checked against wrk2 (github giltene/wrk2, built by hand outside the repo; not used by the bench: the bench must
install its own tools, and only Debian, PyPI and npm are reachable here, as is no crates.io for oha; Debian's
h2load --rps sends in 10 ms bursts and times from the actual send). A server stalling 200 ms every 2 s at
1,000 req/s: p99 / p99.9 182 / 200 ms here, 183 / 200 ms with wrk2 -t1 -c32. The API at 1,700 req/s: the same
p99 and p99.9 within noise as wrk2 -t32 -c32; p50 0.4-0.5 ms here against wrk2's 1.5-2 ms (wrk2 rounds every
wait up a millisecond and counts it). Cost: about 70 us of client CPU a request (wrk2 -t1: about 40, closed-loop
wrk: about 18), so at 8,000-10,000 req/s the client takes most of a core of its own; on a 2-core machine the 80%
point of a 2-process server is partly client-bound.

    python bench/open_loop.py URL BODY.json --rate 2000 [--seconds 10] [--conns 32]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from string import Template


def auth_lua() -> str:
    """The wrk line that sends the bench's API key, when it made one (bench/_local.py api_key_env)."""
    key = os.environ.get("BENCH_API_KEY")
    return f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""


LEAD_US = 500_000  # every connection's schedule starts this long after wrk starts (its threads connect first)

LUA = Template(r"""
local ffi = require("ffi")
ffi.cdef[[
struct fw_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clock, struct fw_timespec *ts);
]]
local ts = ffi.new("struct fw_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC: one clock for every thread
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("$body"):read("*a")

local RATE, CONNS = $rate, $conns
local START = now_us() + $lead  -- read in the main state, handed to every thread by setup()
local threads = {}

function setup(thread)
  thread:set("id", #threads)  -- connection k sends at START + (k + n * CONNS) / RATE, n = 0, 1, ...
  thread:set("start", START)
  threads[#threads + 1] = thread
end

function init(args)
  req = wrk.format()
  n, lat, late, bad, due, behind, sent, last = 0, {}, 0, 0, 0, false, 0, 0
end

function delay()  -- wrk calls it when the connection is free for its next request
  due = start + (id + n * CONNS) * 1000000 / RATE
  n = n + 1
  local now = now_us()
  behind = now > due
  if behind then
    late = late + 1
    return 0
  end
  return math.floor((due - now) / 1000 + 0.5)
end

function request()
  sent = now_us()
  return req
end

function response(status, headers, body)
  last = now_us()
  lat[#lat + 1] = last - (behind and due or sent)
  if status > 299 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local out = io.open("$out", "w")
  local e = summary.errors
  out:write(string.format("%d\n", e.connect + e.read + e.write))
  for _, thread in ipairs(threads) do
    out:write(string.format("%d %d %d\n", thread:get("late"), thread:get("bad"), thread:get("last") - START))
    out:write(table.concat(thread:get("lat"), " "), "\n")
  end
  out:close()
end
""")


def ensure_wrk() -> str:
    """Debian's wrk (it has LuaJIT, which the open-loop script needs); installed with apt-get when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found: installing Debian's wrk (apt-get install wrk)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk not found: apt-get install wrk")
    return found


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    i = min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))  # nearest rank
    return values[i]


def open_loop(url: str, body_file: str, rate: float, seconds: float, conns: int = 32) -> dict[str, float]:
    """`rate` requests a second for `seconds` over `conns` connections: latency percentiles in ms (from each
    request's due time), the rate achieved, the share of late requests (%) and the failed ones."""
    conns = max(1, min(conns, int(rate)))  # each connection sends at least once a second
    with tempfile.TemporaryDirectory(prefix="flywheel-open-") as tmp:
        script, out = Path(tmp) / "open.lua", Path(tmp) / "out.txt"
        script.write_text(LUA.substitute(body=body_file, rate=f"{rate:.3f}", conns=conns, lead=LEAD_US, out=out)
                          + auth_lua())  # fmt: skip
        seconds_arg = f"{math.ceil(seconds + LEAD_US / 1e6)}s"
        run = subprocess.run([ensure_wrk(), f"-t{conns}", f"-c{conns}", f"-d{seconds_arg}", "--timeout", "30s",
                              "-s", str(script), url], capture_output=True, text=True)  # fmt: skip
        if run.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk (open loop) failed: {run.stderr.strip() or run.stdout.strip()}")
        lines = out.read_text().splitlines()
    socket_errors, late, bad, window_us = int(lines[0]), 0, 0, 1
    latencies: list[float] = []
    for head, values in zip(lines[1::2], lines[2::2], strict=True):
        t_late, t_bad, t_last = map(int, head.split())
        late, bad, window_us = late + t_late, bad + t_bad, max(window_us, t_last)
        latencies.extend(float(v) / 1000 for v in values.split())
    latencies.sort()
    window = window_us / 1e6  # from the first due time to the last answer
    return {"rate": rate, "achieved": len(latencies) / window, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "p999": percentile(latencies, 99.9),
            "max": latencies[-1] if latencies else float("nan"), "late": 100 * late / max(1, len(latencies)),
            "errors": bad + socket_errors, "requests": len(latencies)}  # fmt: skip


HEADER = (f"{'server':16} {'capacity':>8} {'load':>4} {'rate/s':>7} {'got/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'p99.9 ms':>8} {'max ms':>7} {'late %':>6} {'errors':>6}")  # fmt: skip


def row(name: str, capacity: float, fraction: float, r: dict[str, float]) -> str:
    return (f"{name:16} {capacity:8.0f} {fraction:4.0%} {r['rate']:7.0f} {r['achieved']:7.0f} {r['p50']:7.2f} "
            f"{r['p99']:7.2f} {r['p999']:8.2f} {r['max']:7.1f} {r['late']:6.1f} {r['errors']:6.0f}")  # fmt: skip


FRACTIONS = (0.5, 0.8)
Points = dict[float, dict[str, float]]  # fraction of capacity: open_loop()'s figures


def at_fractions(url: str, body_file: str, capacity: float, seconds: float, conns: int = 32) -> Points:
    """Run right after a server's closed-loop c=64 point (its capacity): the open loop at each fraction of it,
    each a 2 s warm-up at the rate, then `seconds` measured."""
    points: Points = {}
    for fraction in FRACTIONS:
        open_loop(url, body_file, capacity * fraction, 2, conns)  # warm-up
        points[fraction] = open_loop(url, body_file, capacity * fraction, seconds, conns)
    return points


def print_table(results: dict[str, tuple[float, Points]], seconds: float, conns: int) -> None:
    """`results`: server name -> (its capacity, at_fractions())."""
    print(
        f"\nopen loop, 1 row per request, {conns} connections, {seconds:g} s per point: latency from each "
        "request's due time (coordinated omission corrected); capacity: its closed-loop c=64 req/s just before"
    )
    print("late %: requests whose connection was still busy when they fell due (they waited in the client)")
    print(HEADER)
    for fraction in FRACTIONS:
        for name, (capacity, points) in results.items():
            print(row(name, capacity, fraction, points[fraction]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("body", help="JSON body file, POSTed with Content-Type: application/json")
    parser.add_argument("--rate", type=float, required=True, help="requests per second, all connections together")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--conns", type=int, default=32)
    args = parser.parse_args()
    print(HEADER)
    print(row("target", float("nan"), float("nan"), open_loop(args.url, args.body, args.rate, args.seconds,
                                                              args.conns)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
