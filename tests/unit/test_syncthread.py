"""SyncThread: fsync rounds in a thread of their own, the hub free meanwhile."""

from __future__ import annotations

import threading
import time

import gevent
import pytest

from logd.syncthread import SyncThread


@pytest.fixture
def syncer() -> SyncThread:
    s = SyncThread("test-fsync")
    yield s
    s.stop()


def test_runs_in_another_thread_and_returns(syncer: SyncThread) -> None:
    seen: list[int] = []
    syncer.run(lambda: seen.append(threading.get_ident()))
    assert seen and seen[0] != threading.get_ident()


def test_raises_what_the_call_raised(syncer: SyncThread) -> None:
    def fail() -> None:
        raise OSError(5, "injected")

    with pytest.raises(OSError, match="injected"):
        syncer.run(fail)
    syncer.run(lambda: None)  # and goes on


def test_other_greenlets_run_while_a_call_blocks(syncer: SyncThread) -> None:
    gate = threading.Event()
    ticks: list[float] = []

    def ticker() -> None:
        for _ in range(5):
            ticks.append(time.monotonic())
            gevent.sleep(0.01)
        gate.set()  # the blocked call ends only once the hub has run us

    t = gevent.spawn(ticker)
    syncer.run(lambda: gate.wait(10))
    assert len(ticks) == 5 and gate.is_set()
    t.join(timeout=1)


def test_a_call_abandoned_by_a_killed_greenlet_does_not_wake_the_next(syncer: SyncThread) -> None:
    first_gate, second_gate = threading.Event(), threading.Event()
    done: list[str] = []
    g = gevent.spawn(syncer.run, lambda: (first_gate.wait(10), done.append("first")))
    gevent.sleep(0.02)
    g.kill()  # its waiter goes; the call still runs in the thread
    second = gevent.spawn(syncer.run, lambda: (second_gate.wait(10), done.append("second")))
    first_gate.set()  # the first call ends and wakes the hub: not the second's end
    deadline = time.monotonic() + 5
    while "first" not in done and time.monotonic() < deadline:
        gevent.sleep(0.01)
    gevent.sleep(0.05)
    assert done == ["first"] and not second.ready()
    second_gate.set()
    second.join(timeout=5)
    assert second.successful() and done == ["first", "second"]


def test_many_calls_in_a_row(syncer: SyncThread) -> None:
    n = [0]

    def bump() -> None:
        n[0] += 1

    for _ in range(500):
        syncer.run(bump)
    assert n[0] == 500
