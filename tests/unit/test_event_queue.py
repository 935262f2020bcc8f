"""The event queue (logd/events/queue.py) in-process under gevent, on a MemoryLog.

Order across submitters, group commit under ``--fsync always`` (one fsync
releases every reply waiting at or below the synced id), and the drain at
shutdown. The fsync is a gate the test opens: it runs in the hub's
threadpool, so the gate is a ``threading.Event``.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import gevent
from gevent.event import AsyncResult
import pytest

from logd import stats as st
from logd.config import FsyncPolicy
from logd.events import EventQueue, Peer
from logd.log.memory import MemoryLog
from logd.protocol import Head, Msg

PEER = Peer("unix", True)


class _GatedPoint:
    def __init__(self, head: int) -> None:
        self.head = head
        self.gate = threading.Event()

    def run(self) -> None:
        assert self.gate.wait(10), "the test never opened this fsync"


class GatedLog(MemoryLog):
    """A MemoryLog whose every fsync waits until the test opens its gate."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[_GatedPoint] = []

    def begin_sync(self) -> _GatedPoint:  # type: ignore[override]
        point = _GatedPoint(self.head())
        self.points.append(point)
        return point


def until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.002)


@pytest.fixture
def gated() -> Iterator[tuple[EventQueue, GatedLog]]:
    log = GatedLog()
    queue = EventQueue(log, FsyncPolicy.parse("always"), st.Stats())
    queue.start()
    try:
        yield queue, log
    finally:
        for point in log.points:
            point.gate.set()
        queue.stop()


def reply_of(submitted: bytes | AsyncResult, timeout: float) -> bytes:
    """submit() returns a reply that is ready at once as it is, else an AsyncResult."""
    return submitted if isinstance(submitted, bytes) else submitted.get(timeout=timeout)


@pytest.mark.parametrize("policy", ["never", "always"])
def test_order_across_two_submitters(policy: str) -> None:
    log = MemoryLog()
    queue = EventQueue(log, FsyncPolicy.parse(policy), st.Stats())
    queue.start()
    replies: dict[bytes, bytes] = {}

    def submitter(tag: bytes) -> list[int]:
        ids = []
        for i in range(50):
            body = tag + b"%02d" % i
            reply = reply_of(queue.submit(Msg((body,)), PEER), 5)
            replies[body] = reply
            ids.append(int(reply.split()[1]))
            gevent.sleep(0)  # let the other one in between
        return ids

    a, b = gevent.spawn(submitter, b"a"), gevent.spawn(submitter, b"b")
    gevent.joinall([a, b], timeout=10, raise_error=True)
    queue.stop()
    assert a.value == sorted(a.value) and b.value == sorted(b.value)  # each in its order
    assert sorted(a.value + b.value) == list(range(1, 101))  # every id once
    assert {a.value[1] - a.value[0], b.value[1] - b.value[0]} != {1}  # they did interleave
    # Each reply names the id its body got.
    for record in log.read(1, 101):
        assert replies[record.body] == b"OK %d\r\n" % record.id
    assert queue.commits.committed == 100 and queue.commits.position == log.position(101)


def test_group_commit_releases_every_waiter_at_or_below_the_synced_id(gated: tuple[EventQueue, GatedLog]) -> None:
    queue, log = gated
    first = queue.submit(Msg((b"a",)), PEER)
    until(lambda: len(log.points) == 1)  # fsync round 1 runs, covering id 1
    assert log.points[0].head == 1
    second = queue.submit(Msg((b"b",)), PEER)
    third = queue.submit(Msg((b"c", b"d")), PEER)
    head = queue.submit(Head(), PEER)  # HEAD waits for what it counts to be durable
    gevent.sleep(0.02)
    assert not any(r.ready() for r in (first, second, third, head))
    assert queue.commits.committed == 0
    log.points[0].gate.set()
    assert first.get(timeout=5) == b"OK 1\r\n"
    until(lambda: len(log.points) == 2)
    assert queue.commits.committed == 1  # released: exactly what round 1 covered
    assert not any(r.ready() for r in (second, third, head))
    assert log.points[1].head == 4  # one fsync for everything that arrived meanwhile
    log.points[1].gate.set()
    assert [r.get(timeout=5) for r in (second, third, head)] == [b"OK 2\r\n", b"OK 4\r\n", b"OK 4\r\n"]
    assert len(log.points) == 2
    assert (queue.commits.committed, queue.commits.position) == (4, log.position(5))
    assert log.synced_head() == 4


def test_drain_answers_everything_then_stops_streams(gated: tuple[EventQueue, GatedLog]) -> None:
    queue, log = gated
    pending = [queue.submit(Msg((b"m%d" % i,)), PEER) for i in range(5)]
    until(lambda: len(log.points) == 1)
    stream = gevent.spawn(queue.commits.wait, 10**9)  # a tail reader waiting for more
    drain = gevent.spawn(queue.drain, 5.0)
    gevent.sleep(0.02)
    late = reply_of(queue.submit(Msg((b"late",)), PEER), 5)
    assert late.startswith(b"ERR SHUTDOWN ")  # no new writes while draining
    assert not drain.dead and not stream.dead  # it waits for the fsyncs due
    for point in log.points:
        point.gate.set()
    until(lambda: len(log.points) == 2 or all(r.ready() for r in pending))
    for point in log.points:
        point.gate.set()
    drain.join(timeout=5)
    assert drain.dead
    assert [r.get(timeout=0) for r in pending] == [b"OK %d\r\n" % i for i in range(1, 6)]
    stream.join(timeout=1)
    assert stream.dead and queue.commits.stopped.is_set()
    queue.stop()
    after = reply_of(queue.submit(Msg((b"after",)), PEER), 1)
    assert after.startswith(b"ERR SHUTDOWN ")
    assert log.head() == 5
