"""Synchronous replication (``--min-acks N``): MSG replies wait for followers,
and readers see only what enough followers confirm.

Two commit levels. ``commits`` (the event queue's) is what the primary has
committed under its own ``--fsync`` policy; REPLICATE streams follow it, or
followers could never confirm anything. ``visible`` is the acknowledged
watermark (``watermark.py``): READ streams and tails follow it, and HEAD
names it, so no consumer acts on a message a failover can lose. Every ACK a
follower sends calls ``on_report()``, which moves the watermark and wakes
whoever waits on ``visible``.

A MSG's reply under ``--min-acks`` is a ``WaitAcks``; the event queue hands it
over like any reply (after the local commit under ``--fsync always``), and
the connection's writer greenlet waits for it (``wait()``), so the queue
never blocks, pipelined replies keep their order, and other connections are
served meanwhile. Past ``--ack-timeout`` the reply becomes
``ERR NOTREPLICATED``: the MSG stays on the primary (it is not taken back),
and its ids become visible when a follower does confirm them, as Kafka's
high watermark moves only when replicas catch up.

With ``--min-acks 0`` none of this exists: ``visible`` is ``commits``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog
from gevent.event import Event

from .. import protocol as p
from .. import stats as st
from ..errors import NotReplicated
from .commit import Commits
from .watermark import Position, Watermark, confirmed

__all__ = ["Acks", "WaitAcks", "ACK_TIMEOUTS", "acks_off_stats"]

ACK_TIMEOUTS = "ack_timeouts"  # MSGs answered NOTREPLICATED

log = structlog.get_logger("logd.acks")


@dataclass(frozen=True, slots=True)
class WaitAcks:
    """Send ``reply`` once ``min_acks`` followers confirm id ``last``; past
    ``deadline`` (time.monotonic) send ``NOTREPLICATED`` for ids ``first..last``."""

    first: int
    last: int
    reply: bytes
    deadline: float


class Acks:
    def __init__(self, min_acks: int, timeout: float, commits: Commits,
                 followers: Mapping[int, Any], position: Callable[[int], tuple[int, int]],
                 stats: st.Stats) -> None:
        """``followers``: the primary's FollowerState objects by connection
        (only those that sent a hello count); ``position(id)``: where an id starts."""
        self.min_acks = min_acks
        self.timeout = timeout
        self.commits = commits
        self.followers = followers
        self.stats = stats
        self._position = position
        self.watermark = Watermark(min_acks)
        # Nothing is known to be confirmed when the process starts (the
        # watermark is not persisted): followers' first reports, sent as they
        # connect, bring it up to their copies.
        self.visible = Commits(0, (0, 0))

    # -- the watermark ------------------------------------------------------------------

    def reports(self) -> list[Position]:
        return [confirmed(f.written, f.synced, f.fsync) for f in self.followers.values() if f.counted]

    def on_report(self) -> None:
        """A follower reported (ACK): move the watermark, wake its waiters."""
        mark = self.watermark
        if mark.update(self.reports(), self.commits.committed):
            position = mark.position
            if position is None:
                position = self._position(mark.id + 1)
            self.visible.publish(mark.id, position)

    # -- replies ------------------------------------------------------------------------

    def expect(self, first: int, last: int, reply: bytes) -> WaitAcks:
        """The reply of a MSG of ids ``first..last``, due once they are confirmed."""
        # 0 waits as long as it takes, as Redis's WAIT n 0 does.
        return WaitAcks(first, last, reply, time.monotonic() + self.timeout if self.timeout else math.inf)

    def wait(self, w: WaitAcks, gone: Event) -> bytes:
        """Block this greenlet until ``w`` is confirmed (its reply) or its
        deadline or the server's stop (``NOTREPLICATED``); b"" once the peer
        is ``gone`` (nobody to tell)."""
        visible = self.visible
        while visible.committed < w.last:
            if gone.is_set():
                return b""
            left = w.deadline - time.monotonic()
            if left <= 0 or visible.stopped.is_set():
                return self._timed_out(w, stopping=left > 0)
            visible.wait(visible.committed, gone, timeout=None if left == math.inf else left)
        return w.reply

    def _timed_out(self, w: WaitAcks, stopping: bool) -> bytes:
        self.stats.incr(ACK_TIMEOUTS)
        got = self.watermark.count(self.reports(), w.last)
        when = "before the server stopped" if stopping else f"within {self.timeout:g} s"
        log.warning("ack_timeout", first=w.first, last=w.last, confirmed=got, min_acks=self.min_acks,
                    stopping=stopping)
        return p.encode_error(NotReplicated(
            f"ids {w.first}-{w.last} are on the primary but only {got} of {self.min_acks} followers confirmed "
            f"them {when}; they may not survive a failover", first=w.first, last=w.last))

    def settle(self, timeout: float) -> None:
        """Wait (bounded) until what is committed is confirmed too: a graceful
        stop gives followers the chance to confirm the last MSGs."""
        deadline = time.monotonic() + timeout
        visible = self.visible
        while visible.committed < self.commits.committed:
            left = deadline - time.monotonic()
            if left <= 0 or len(self.reports()) < self.min_acks:  # too few followers to wait for
                return
            visible.wait(visible.committed, timeout=left)

    def stop(self) -> None:
        self.visible.stop()

    def stats_(self) -> dict[str, Any]:
        return {"min_acks": self.min_acks, "ack_timeout": self.timeout,
                "acked_head": self.visible.committed, ACK_TIMEOUTS: self.stats.counters[ACK_TIMEOUTS]}


def acks_off_stats(committed: int, timeout: float) -> dict[str, Any]:
    """STATS under ``--min-acks 0``: the watermark is the commit."""
    return {"min_acks": 0, "ack_timeout": timeout, "acked_head": committed, ACK_TIMEOUTS: 0}
