"""Each serving process's published figures of a rollout (stats/<pod>.json, read by flywheel/release/rollout_stats.py),
and whether they can be true before the judge sums them: an object under the rollout's stats/ prefix may have been
written by anyone who can write there, so its times must fit the clock and its counts a process's speed.

Pure: no I/O and no clock (the caller passes `now`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flywheel.release.judge import VersionStats
from flywheel.release.rollout_state import Rollout

#: The most requests (both versions' together) one replica process can have run per second of a rollout. A
#: process is bound by HTTP, JSON and the request checks on one core: measured, it answers about 2,800 1-row
#: requests/s, and two processes about 5,000 together (docs/serving.md, "Cores"). 50,000/s leaves room for
#: far faster hardware, for shadow runs counted beside the requests they copy, and for a burst; a figure above it
#: cannot be a replica's count, so the object was written by something else (or is corrupt).
MAX_POD_REQUESTS_PER_SECOND = 50_000
#: How far, in seconds, the clocks of the replicas, the judge and whoever started the rollout may disagree before
#: a timestamp is impossible. Hosts synchronised by NTP (Amazon Time Sync) agree within milliseconds; an operator's
#: laptop starting a rollout may be off by more, and stored timestamps are whole seconds. Never widens the request
#: ceiling: that counts from the later of the two starts and up to the earlier of the two ends.
CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True)
class PodReport:
    """One serving process's published figures of a rollout (one statistics object, `name` as the reason shows it:
    stats/<pod>.json), with the times that bound them: `updated_at` when they were counted, `started_at` when the
    process joined the rollout (None in objects written before publish recorded it)."""

    name: str
    candidate: VersionStats
    production: VersionStats
    updated_at: datetime
    started_at: datetime | None = None

    @property
    def requests(self) -> int:
        """Requests of both versions this process ran: its work, which MAX_POD_REQUESTS_PER_SECOND bounds."""
        return self.candidate.requests + self.production.requests

    @classmethod
    def from_dict(cls, name: str, doc: Mapping[str, Any]) -> PodReport:
        """Read one statistics object (flywheel/release/rollout_stats.py `publish`); ValueError (or KeyError,
        TypeError) when it is malformed: impossible counts (VersionStats.from_dict) or timestamps that are not
        ISO 8601 with a time zone."""
        started = doc.get("started_at")
        return cls(
            name=name,
            candidate=VersionStats.from_dict(doc["candidate"]),
            production=VersionStats.from_dict(doc["production"]),
            updated_at=_timestamp(doc.get("updated_at"), "updated_at"),
            started_at=None if started is None else _timestamp(started, "started_at"),
        )


def _timestamp(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a timestamp: {value!r}")
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone")
    return at


def implausible(rollout: Rollout, pod: PodReport, now: datetime) -> str:
    """Why `pod`'s figures cannot be true ("" when they can). A statistics object is written by a replica, or by
    anyone else who can write under the rollout's stats/ prefix, so before it is summed it must fit the clock:

    - its `updated_at` is neither after `now` nor before the rollout began, and its `started_at` (the process
      joining the rollout) neither before the rollout began nor after its own `updated_at` (CLOCK_SKEW_SECONDS
      of tolerance where two clocks meet; `started_at` after now is thereby refused too);
    - its requests are at most MAX_POD_REQUESTS_PER_SECOND for every second from the later of the rollout's and the
      process's start to the earlier of `updated_at` and now (plus one: timestamps are whole seconds).
    """
    began = datetime.fromisoformat(rollout.started_at)
    skew = timedelta(seconds=CLOCK_SKEW_SECONDS)
    updated, started = pod.updated_at, pod.started_at
    if updated > now + skew:
        return f"updated_at {_iso(updated)} is after now ({_iso(now)})"
    if updated < began - skew:
        return f"updated_at {_iso(updated)} is before the rollout began ({rollout.started_at})"
    if started is not None and started > updated:
        return f"started_at {_iso(started)} is after its own figures' updated_at {_iso(updated)}"
    if started is not None and started < began - skew:
        return f"started_at {_iso(started)} is before the rollout began ({rollout.started_at})"
    start = max(began, started or began)
    seconds = max((min(updated, now) - start).total_seconds(), 0.0)
    if pod.requests > MAX_POD_REQUESTS_PER_SECOND * (seconds + 1):
        return f"{pod.requests} requests in {seconds:.0f} s is above {MAX_POD_REQUESTS_PER_SECOND}/s"
    return ""


def screen(rollout: Rollout, pods: Iterable[PodReport], now: datetime) -> tuple[list[PodReport], list[str]]:
    """(the pods whose figures can be true, one "skipped <name>: <why>" per pod left out): `implausible`."""
    kept: list[PodReport] = []
    skipped: list[str] = []
    for pod in pods:
        why = implausible(rollout, pod, now)
        if why:
            skipped.append(f"skipped {pod.name}: {why}")
        else:
            kept.append(pod)
    return kept, skipped


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")
