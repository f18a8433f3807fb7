"""Hostile request heads against any server on loopback: does it bound a head's size, header count and time?

    python bench/serve.py --servers --heads     # each contender of bench/http_servers.py, after its tables

Each probe opens one connection and prints the first line the server answered (or how the connection ended) and
when: complete heads of 20 KB and 64 KB, 101 and 150 headers, a head that never ends (1 MB sent), a head cut off
mid-way then silence, a connection that sends nothing, and a head dripped one header line every 2 s. Then
bench/header_flood.py's flood: three sockets sending 96 MB heads without end (reopened when closed) while one
client predicts in a loop; the server's RSS (every process of it) before and at its peak, and how the sockets ended.
The project's limits (docs/serving.md, "Request heads"): 32 KB, 100 headers, 10 s, 431/408 and the connection closed.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from bench.header_flood import under_flood

HEAD = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
LINE = b"X-Filler: " + b"a" * 65536 + b"\r\n"
PROBES: dict[str, tuple[list[bytes], float]] = {  # label: (writes, seconds between them)
    "20 KB head": ([HEAD + b"X-A: " + b"a" * 20_000 + b"\r\n\r\n"], 0),
    "64 KB head": ([HEAD + b"X-A: " + b"a" * 65_536 + b"\r\n\r\n"], 0),
    "101 headers": ([HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n"], 0),
    "150 headers": ([HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(149)) + b"\r\n"], 0),
    "head without end (1 MB)": ([HEAD, *[LINE] * 16], 0),
    "half a head, then silence": ([HEAD], 0),
    "nothing sent": ([], 0),
    "a header line every 2 s": ([HEAD, *[b"X-D: 1\r\n"] * 12], 2.0),
}


def attempt(port: int, writes: list[bytes], pause: float, wait: float = 20) -> tuple[str, float]:
    """The first line answered (or how the connection ended) and the seconds from the first write."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    started = time.monotonic()
    try:
        for data in writes:
            sock.sendall(data)
            time.sleep(pause)
        answer = sock.recv(200).split(b"\r\n", 1)[0].decode(errors="replace")
        outcome = answer or "closed"
    except TimeoutError:
        outcome = f"open after {wait:.0f} s"
    except OSError as e:
        outcome = f"closed ({type(e).__name__})"
    finally:
        sock.close()
    return outcome, time.monotonic() - started


def tree_rss_mb(root: int) -> float:
    """Resident memory of `root` and every descendant (a server's workers), MB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def probe(name: str, pid: int, port: int, body: bytes, flood_seconds: int = 20) -> None:
    """Print each probe's outcome, then the flood's figures, for one server."""
    print(f"\n{name}: hostile heads")
    for label, (writes, pause) in PROBES.items():
        outcome, seconds = attempt(port, writes, pause)
        print(f"  {label:28} {outcome:45} after {seconds:5.1f} s", flush=True)
    r = under_flood(pid, port, body, 3, 96, flood_seconds, rss=tree_rss_mb)
    print(f"  flood ({flood_seconds} s, 3 sockets x 96 MB heads): client p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
          f"failed {r['failed']}/{r['requests']}; RSS {r['rss_before']:.0f} MB before, {r['rss_peak']:.0f} MB peak; "
          f"sockets: {', '.join(r['sockets'])}", flush=True)  # type: ignore[arg-type]  # fmt: skip
