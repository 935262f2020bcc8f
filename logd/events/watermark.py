"""The acknowledged watermark of synchronous replication (``--min-acks``), pure.

A follower *confirms* an id once it has reported it written, or fsynced
when its own ``--fsync`` policy is ``always`` (or unknown: an older follower
that does not say is held to the stricter rule). The watermark is the
highest id that ``min_acks`` followers confirm: the ``min_acks``-th highest
confirmed id, never above what the primary itself has committed. Like
Kafka's high watermark it only moves forward: a follower that goes away
takes nothing back, it just stops counting.

No sockets, no gevent, no clock: ``acks.py`` drives it.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["Position", "confirmed", "Watermark"]

Position = tuple[int, int, int]  # partition, offset just past the id, id


def confirmed(written: Position, synced: Position, fsync: str) -> Position:
    """What a follower confirms: its written position, or its synced one
    when its policy is ``always`` or not known."""
    return written if fsync and fsync != "always" else synced


class Watermark:
    """The highest id ``min_acks`` followers confirm; see the module docstring."""

    def __init__(self, min_acks: int) -> None:
        if min_acks < 1:
            raise ValueError("min_acks must be at least 1")
        self.min_acks = min_acks
        self.id = 0
        self.position: tuple[int, int] | None = None  # just past ``id``, when known

    def update(self, reports: Iterable[Position], committed: int) -> bool:
        """Take the followers' confirmed positions; True when the watermark moved.

        Ids above ``committed`` (the primary's own commit) never count: a
        follower cannot hold what the primary has not committed, and if one
        claims to, the claim is capped rather than believed. A capped
        watermark has no known position (``position`` is None then).
        """
        best = sorted(reports, key=lambda r: r[2], reverse=True)
        if len(best) < self.min_acks:
            return False
        partition, offset, id_ = best[self.min_acks - 1]
        position: tuple[int, int] | None = (partition, offset)
        if id_ > committed:
            id_, position = committed, None
        if id_ <= self.id:
            return False
        self.id, self.position = id_, position
        return True

    def count(self, reports: Iterable[Position], id_: int) -> int:
        """How many of the followers confirm ``id_``."""
        return sum(1 for r in reports if r[2] >= id_)
