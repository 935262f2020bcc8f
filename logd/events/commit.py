"""The commit source: what readers may see, and a way to wait for more.

A record is *committed* once the server will never take it back: written
(``--fsync interval|never``) or fsynced (``always``). Streams send committed
ids only. This object is all they know of commits: ``committed`` (the last
committed id), ``position`` (the ``(partition, offset)`` just past it),
``wait()`` for the next ``publish()``, and ``stopped`` (streams end: the
server is shutting down).

On a primary the event queue publishes; on a read replica the directory
watcher (``watch.py``). Under ``--min-acks`` a primary has a second one, the
acknowledged watermark, that follower ACKs publish (``acks.py``): READ
streams follow that one, REPLICATE streams this one.
"""

from __future__ import annotations

import time

import gevent
from gevent.event import Event

from .lag import CommitTimes

__all__ = ["Commits"]


class Commits:
    def __init__(self, committed: int, position: tuple[int, int]) -> None:
        self.committed = committed
        self.position = position
        self.stopped = Event()
        self._event = Event()  # replaced at each publish: set means "something new"
        self.times = CommitTimes()  # when ids were committed: followers' lag in seconds
        self.times.record(committed, time.monotonic())  # older ids: at least since we started

    def publish(self, committed: int, position: tuple[int, int]) -> None:
        """Ids up to ``committed`` (ending at ``position``) are committed; wake waiters."""
        self.committed = committed
        self.position = position
        self.times.record(committed, time.monotonic())
        if self._event.linkcount():  # nobody waits (no tail reader, no follower): keep it
            event, self._event = self._event, Event()
            event.set()

    def stop(self) -> None:
        """Streams must end; wakes every waiter."""
        self.stopped.set()
        self._event.set()

    def wait(self, seen: int, *also: Event, timeout: float | None = None) -> None:
        """Return once an id after ``seen`` is committed, on stop, or when one
        of ``also`` is set (or after ``timeout``). Returns at once if that is
        already so: no wake-up is lost between a check and the wait."""
        if self.committed > seen or self.stopped.is_set() or any(e.is_set() for e in also):
            return
        gevent.wait([self._event, self.stopped, *also], count=1, timeout=timeout)
