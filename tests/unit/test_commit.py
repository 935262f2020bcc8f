"""The commit source (logd/events/commit.py) under gevent: publish, wait, stop."""

from __future__ import annotations

import gevent
from gevent.event import Event

from logd.events.commit import Commits


def test_publish_carries_the_id_and_the_position() -> None:
    commits = Commits(0, (1, 0))
    commits.publish(3, (1, 120))
    assert (commits.committed, commits.position) == (3, (1, 120))
    assert not commits.stopped.is_set()


def test_wait_returns_at_once_when_something_newer_is_committed() -> None:
    commits = Commits(5, (1, 50))
    with gevent.Timeout(1):
        commits.wait(4)  # 5 > 4: nothing to wait for


def test_wait_sleeps_until_the_next_publish() -> None:
    commits = Commits(2, (1, 20))
    woke: list[int] = []

    def reader() -> None:
        commits.wait(2)
        woke.append(commits.committed)

    g = gevent.spawn(reader)
    gevent.sleep(0.01)
    assert woke == []  # nothing newer than 2 yet
    commits.publish(3, (1, 30))
    g.join(timeout=1)
    assert woke == [3]


def test_every_waiter_wakes_and_a_later_wait_waits_again() -> None:
    commits = Commits(0, (1, 0))
    woke: list[int] = []
    gs = [gevent.spawn(lambda: (commits.wait(0), woke.append(1))) for _ in range(3)]
    gevent.sleep(0.01)
    commits.publish(1, (1, 10))
    gevent.joinall(gs, timeout=1)
    assert woke == [1, 1, 1]
    late = gevent.spawn(commits.wait, 1)
    late.join(timeout=0.05)
    assert not late.dead  # the event of the last publish does not wake it
    commits.publish(2, (1, 20))
    late.join(timeout=1)
    assert late.dead


def test_stop_wakes_waiters_and_later_waits_return() -> None:
    commits = Commits(0, (1, 0))
    g = gevent.spawn(commits.wait, 0)
    gevent.sleep(0.01)
    commits.stop()
    g.join(timeout=1)
    assert g.dead and commits.stopped.is_set()
    with gevent.Timeout(1):
        commits.wait(0)


def test_another_event_ends_the_wait() -> None:
    commits = Commits(0, (1, 0))
    gone = Event()
    g = gevent.spawn(commits.wait, 0, gone)
    gevent.sleep(0.01)
    assert not g.dead
    gone.set()
    g.join(timeout=1)
    assert g.dead and commits.committed == 0


def test_wait_times_out() -> None:
    commits = Commits(0, (1, 0))
    with gevent.Timeout(1):
        commits.wait(0, timeout=0.01)
