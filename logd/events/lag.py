"""How far behind a follower is: in bytes, and in seconds.

``CommitTimes`` remembers when ids were committed: a bounded deque of
``(last id, monotonic time)``, one entry per publish, where publishes less
than ``resolution`` apart share one entry (the newest id wins). So it holds
at most ``size`` entries, and covers ``size * resolution`` seconds of
continuous commits at least; an id older than every entry is reported with
the oldest entry's age, a lower bound.

Lag in seconds is Kafka's "time since caught up": the age of the oldest
committed message the follower lacks (0 when it lacks none). Lag in bytes
runs from the follower's written ``(partition, offset)`` to the committed
end, across partitions. Pure code (``measure`` reads a log and its commits).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable

__all__ = ["CommitTimes", "lag_bytes", "measure"]


class CommitTimes:
    def __init__(self, size: int = 8192, resolution: float = 0.01) -> None:
        self._entries: deque[tuple[int, float]] = deque(maxlen=size)
        self._resolution = resolution

    def record(self, last_id: int, now: float) -> None:
        """Ids up to ``last_id`` are committed at ``now`` (monotonic)."""
        entries = self._entries
        if entries:
            prev_id, prev_time = entries[-1]
            if last_id <= prev_id:
                return
            if now - prev_time < self._resolution and len(entries) > 1:
                # Coalesce: keep the earlier time for ids committed within one resolution.
                entries[-1] = (last_id, prev_time)
                return
        entries.append((last_id, now))

    def committed_at(self, id: int) -> float | None:
        """When ``id`` was committed (the oldest bound known), None if not yet."""
        entries = self._entries
        if not entries or id > entries[-1][0]:
            return None
        lo, hi = 0, len(entries) - 1  # the first entry whose last id >= id
        while lo < hi:
            mid = (lo + hi) // 2
            if entries[mid][0] >= id:
                hi = mid
            else:
                lo = mid + 1
        return entries[lo][1]

    def lag_seconds(self, written_id: int, committed: int, now: float) -> float:
        """The age of the oldest committed id after ``written_id``; 0 if none."""
        if written_id >= committed:
            return 0.0
        at = self.committed_at(written_id + 1)
        return 0.0 if at is None else max(0.0, now - at)


def lag_bytes(partitions: Iterable[tuple[int, int]], written: tuple[int, int],
              end: tuple[int, int]) -> int:
    """Bytes from ``written`` to ``end`` (each ``(partition, offset)``), given
    the log's ``(number, size)`` partitions; 0 when ``written`` is not behind."""
    if written >= end:
        return 0
    total = 0
    for number, size in partitions:
        if number < written[0] or number > end[0]:
            continue
        start = written[1] if number == written[0] else 0
        stop = end[1] if number == end[0] else size
        total += max(0, stop - start)
    return total


def measure(log_: Any, commits: Any, written: tuple[int, int, int]) -> tuple[int, float]:
    """(bytes, seconds) a follower at ``written`` (partition, offset, id) lacks of
    ``log_``'s committed ids (``commits``: events/commit.py)."""
    parts = [(part.number, part.size) for part in log_.partitions()]
    return (lag_bytes(parts, written[:2], tuple(commits.position)),
            commits.times.lag_seconds(written[2], commits.committed, time.monotonic()))
