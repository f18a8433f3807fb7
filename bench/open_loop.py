"""Open-loop latency: requests at a fixed arrival rate, each timed from when it was due (wrk2's method).

Closed-loop wrk (c connections, each sending its next request when the previous one is answered) slows down with
the server, so the requests a stalled server would have received are never sent and never timed: coordinated
omission, which hides the latency users see below saturation. Here request i is due at START + i / rate and goes
out then on an idle keep-alive connection; when none is idle it is late: it waits (first come, first served) for
the next connection to free up and is timed from its due time, so a stall counts for every request it delayed, as
in wrk2. A request sent on time is timed from its send (the client's own wake-up delay is not the server's).
`late %`: the share of requests that found every connection busy (they waited on the client side, not in the
server's queue): high, the server was not keeping up with the rate, or too few connections for its latency
(`--open-conns`). `errors`: answers with a status > 299, and requests never answered (a broken connection, or
still outstanding 30 s after the last was due).

The client is bench/open_loop.c (gcc -O2 on first use, into ~/.cache/flywheel-bench; gcc installed with apt-get
when missing and run as root): one thread, epoll, a periodic timerfd on CLOCK_MONOTONIC that wakes it at each due
time (p50 / p99 35 / 70 us late at 1,000-2,000 req/s: the CLI prints this send lag), and each answer timed by the
kernel (SO_TIMESTAMPNS: when it reached the socket, not when the client got to it). It replaced Debian's `wrk`
driven by the Lua script below (`--client wrk`, kept for comparison: a wrk thread per connection, LuaJIT reading
the clock, wrk's millisecond timers pacing the sends), which times an answer when its thread runs.

Measured (2 cores, shared with the server): a server stalling its event loop 200 ms every 1.5 s, 1,000 req/s,
5 s: p99 / p99.9 185 / 200 ms (wrk + Lua 183 / 200; wrk2 183 / 200 with a stall every 2 s). Flywheel's /v1, one
worker, API keys on, 1 row, 32 connections, 8 s a point, p50 / p99 / p99.9 ms, C then Lua: 1,000 req/s 0.14 /
0.49 / 0.76 and 0.19 / 0.67 / 1.35; 2,000 req/s 0.14 / 0.62 / 0.74 and 0.19 / 0.79 / 1.51 (the C client's p50 is
~50 us lower: the Lua one counts its thread's wake-up); 8,000 req/s 0.13 / 6.8 / 14.8 and 0.33 / 5.5 / 14.0,
one run each, and runs vary (p99 / p99.9 1.5 / 3.0 in another Lua run, 2.8-4.2 / 5.8-7.9 with earlier builds of
the C client): the C client, its answers timed by the kernel, saw the same tail as the Lua one, so that tail is
not only the Lua client's scheduling. Client CPU a request: C 38-40 us at 1,000-2,000 req/s, 31 at 8,000 (5
system calls and one wake-up a request; the loopback send, which runs the server's TCP receive, and the sleep are
most of it, user code ~5%); Lua 62-77 and 36.

    python bench/open_loop.py URL BODY.json --rate 2000 [--seconds 10] [--conns 32] [--client c|wrk]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from string import Template

SOURCE = Path(__file__).with_name("open_loop.c")


def auth_header() -> list[str]:
    """The header line that sends the bench's API key, when it made one (bench/_local.py api_key_env)."""
    key = os.environ.get("BENCH_API_KEY")
    return [f"Authorization: Bearer {key}"] if key else []


def auth_lua() -> str:
    """The same as a wrk Lua line."""
    key = os.environ.get("BENCH_API_KEY")
    return f'wrk.headers["Authorization"] = "Bearer {key}"\n' if key else ""


LEAD_US = 500_000  # wrk: each connection's schedule starts this long after wrk starts (its threads connect)

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


def _apt_install(command: str, *packages: str) -> str:
    """`command`'s path, after apt-get install `packages` when it is missing (as root on Debian)."""
    found = shutil.which(command)
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{command} not found: installing {' '.join(packages)} (apt-get install)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env, check=True)
        found = shutil.which(command)
    if not found:
        raise SystemExit(f"{command} not found: apt-get install {' '.join(packages)}")
    return found


def ensure_wrk() -> str:
    """Debian's wrk (it has LuaJIT, which the open-loop script needs); installed with apt-get when missing."""
    return _apt_install("wrk", "wrk")


def ensure_client() -> str:
    """bench/open_loop.c compiled (gcc -O2), once per version of the source, into ~/.cache/flywheel-bench."""
    source = SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flywheel-bench"
    binary = cache / f"open_loop-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return str(binary)
    gcc = _apt_install("gcc", "gcc", "libc6-dev")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")  # then renamed: concurrent first uses are safe
    run = subprocess.run([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-x", "c", "-", "-o", str(tmp), "-lm"],
                         input=source, capture_output=True)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"gcc could not compile {SOURCE}:\n{run.stderr.decode()}")
    os.replace(tmp, binary)
    return str(binary)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    i = min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))  # nearest rank
    return values[i]


def _figures(rate: float, latencies: list[float], late: int, errors: int, window_us: float) -> dict[str, float]:
    latencies.sort()
    window = max(1.0, window_us) / 1e6  # from the first due time to the last answer
    return {"rate": rate, "achieved": len(latencies) / window, "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "p999": percentile(latencies, 99.9),
            "max": latencies[-1] if latencies else float("nan"), "late": 100 * late / max(1, len(latencies)),
            "errors": errors, "requests": len(latencies)}  # fmt: skip


def run_c(url: str, body_file: str, rate: float, seconds: float, conns: int) -> tuple[dict[str, float], list[int]]:
    """open_loop() with bench/open_loop.c; also its send lag (us after the due time: p50, p99, max)."""
    run = subprocess.run([ensure_client(), url, body_file, f"{rate:.3f}", f"{seconds:g}", str(conns), *auth_header()],
                         capture_output=True, text=True, timeout=seconds + 60)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"open-loop client failed: {run.stderr.strip() or run.stdout.strip()}")
    lines = run.stdout.splitlines()
    answered, late, bad, _socket_errors, unanswered, window_us, *lag = map(int, lines[0].split())
    latencies = [int(v) / 1000 for v in lines[1 : 1 + answered]]
    return _figures(rate, latencies, late, bad + unanswered, window_us), lag


def run_wrk(url: str, body_file: str, rate: float, seconds: float, conns: int) -> dict[str, float]:
    """open_loop() with Debian's wrk and the Lua script above (one wrk thread per connection)."""
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
    return _figures(rate, latencies, late, bad + socket_errors, window_us)


def open_loop(url: str, body_file: str, rate: float, seconds: float, conns: int = 32,
              client: str = "c") -> dict[str, float]:  # fmt: skip
    """`rate` requests a second for `seconds` over `conns` connections: latency percentiles in ms (from each
    request's due time), the rate achieved, the share of late requests (%) and the failed ones. `client`: "c"
    (bench/open_loop.c) or "wrk" (Debian's wrk and the Lua script)."""
    conns = max(1, min(conns, int(rate)))  # each connection sends at least once a second
    if client not in ("c", "wrk"):
        raise ValueError(f"client: c or wrk, not {client!r}")
    if client == "wrk":
        return run_wrk(url, body_file, rate, seconds, conns)
    return run_c(url, body_file, rate, seconds, conns)[0]


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
    print("late %: requests that found every connection busy when they fell due (they waited in the client)")
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
    parser.add_argument("--client", choices=["c", "wrk"], default="c", help="bench/open_loop.c, or wrk and Lua")
    args = parser.parse_args()
    ensure_client() if args.client == "c" else ensure_wrk()  # compiled before the client's CPU is counted
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    conns = max(1, min(args.conns, int(args.rate)))  # as open_loop()
    if args.client == "c":
        r, lag = run_c(args.url, args.body, args.rate, args.seconds, conns)
    else:
        r, lag = run_wrk(args.url, args.body, args.rate, args.seconds, conns), []
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(HEADER)
    print(row(args.client, float("nan"), float("nan"), r))
    print(f"client CPU: {cpu:.2f} s, {1e6 * cpu / max(1, r['requests']):.1f} us a request")
    if lag:
        print(f"send lag (an on-time request sent after its due time): p50 {lag[0]} us, p99 {lag[1]}, max {lag[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
