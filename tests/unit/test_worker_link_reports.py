"""A request worker's answered requests reach its agent in one frame per flush, and when the agent stops reading
they are dropped and counted, never queued without bound (flywheel/serving/relayed.py)."""

from __future__ import annotations

import asyncio
import socket

from prometheus_client import CollectorRegistry

from flywheel.serving import relay
from flywheel.serving.metrics import ServingMetrics
from flywheel.serving.relayed import BATCHED_ROWS, FLUSH_SECONDS, MAX_BATCHED_VALUES, WorkerLink


def _answer(i: int, rows: int = 1) -> tuple[str, list[str], dict[str, list[float]]]:
    return "savings", [f"id-{i}-{r}" for r in range(rows)], {"income": [float(i)] * rows}


async def _linked(max_buffer_bytes: int) -> tuple[WorkerLink, socket.socket, CollectorRegistry]:
    ours, agent = socket.socketpair()
    link = WorkerLink(ours, "pod-1", publish_seconds=3600, max_buffer_bytes=max_buffer_bytes)
    registry = CollectorRegistry()
    link.metrics = ServingMetrics(registry)
    link.start()
    for _ in range(200):  # the link's writer is open once HELLO is queued
        if link._writer is not None:
            break
        await asyncio.sleep(0.01)
    return link, agent, registry


def test_answers_since_the_last_flush_go_out_as_one_frame_in_order() -> None:
    async def run() -> list[tuple[int, object]]:
        link, agent, _ = await _linked(64 << 20)
        for i in range(50):
            model, ids, columns = _answer(i)
            link.record(model, None, [], ids, 3, "production", columns, [float(i)], None, key_id="k1")
        await asyncio.sleep(FLUSH_SECONDS * 10)
        await link.stop()
        agent.setblocking(True)
        reader = relay.BlockingLink(agent)
        frames = []
        agent.settimeout(5)
        while len(frames) < 2:
            got = reader.receive()
            assert got is not None
            frames.append((got[0], relay.safe_loads(got[1])))
        return frames

    frames = asyncio.run(run())
    answered = [payload for kind, payload in frames if kind == relay.ANSWERED]
    assert len(answered) == 1 and [a[5] for a in answered[0]] == [[f"id-{i}-0"] for i in range(50)]
    first = answered[0][0]
    assert first[:3] == ("savings", 3, "production") and first[4] == "k1" and first[6] == {"income": [0.0]}


def test_answers_an_agent_does_not_read_are_dropped_and_counted() -> None:
    async def run() -> tuple[float, int]:
        link, agent, registry = await _linked(256 << 10)  # the agent never reads: the socket and 256 KiB fill up
        sent = 0
        for i in range(400):
            model, ids, columns = _answer(i, rows=100)
            link.record(model, None, [], ids, 3, "production", columns, [0.0] * 100, None)
            sent += 100
            await asyncio.sleep(FLUSH_SECONDS)  # flushes go on between requests
        dropped = registry.get_sample_value(
            "flywheel_capture_dropped_predictions_total", {"model": "savings", "reason": "full"}
        )
        buffered = link._writer.transport.get_write_buffer_size() if link._writer else 0
        for task in link._tasks:
            task.cancel()
        agent.close()
        return dropped or 0.0, buffered

    dropped, buffered = asyncio.run(run())
    assert dropped > 0 and dropped % 100 == 0, (dropped, buffered)  # whole requests, every row of each counted
    assert buffered <= (256 << 10) + (16 << 10), buffered  # at most one request's frame past the bound


def test_a_large_answer_goes_on_its_own_and_many_small_ones_are_cut_into_bounded_frames() -> None:
    width = 1000  # features: a wide schema, so the small answers reach a frame's worth of values quickly
    small = MAX_BATCHED_VALUES // width + 40

    async def run() -> list[list[tuple[object, ...]]]:
        link, agent, _ = await _linked(64 << 20)
        columns = {f"f{j}": [1.0] for j in range(width)}
        big_rows = BATCHED_ROWS + 1
        link.record("savings", None, [], [f"big-{r}" for r in range(big_rows)], 3, "production",
                    {"income": [1.0] * big_rows}, [0.0] * big_rows, None)  # fmt: skip
        for i in range(small):  # within one flush window
            link.record("savings", None, [], [f"small-{i}"], 3, "production", columns, [0.0], None)
        await asyncio.sleep(FLUSH_SECONDS * 10)
        await link.stop()
        agent.settimeout(5)
        reader, frames, seen = relay.BlockingLink(agent), [], 0
        while seen < small + 1:
            got = reader.receive()
            assert got is not None
            if got[0] == relay.ANSWERED:
                frames.append(relay.safe_loads(got[1]))
                seen += len(frames[-1])
        return frames

    frames = asyncio.run(run())
    ids = [answer[5][0] for frame in frames for answer in frame]
    assert sorted(len(f) for f in frames) == [
        1,
        small - (MAX_BATCHED_VALUES // width + 1),
        MAX_BATCHED_VALUES // width + 1,
    ]
    assert ids[0] == "big-0" and [i for i in ids if i.startswith("small")] == [f"small-{i}" for i in range(small)]
