"""Synchronous replication's pure parts: the watermark (events/watermark.py),
what a follower confirms by its --fsync policy, and around them the Acks
bookkeeping (events/acks.py) and the MSG / HEAD handlers with --min-acks, all
without a loop turn, a socket or a sleep."""

from __future__ import annotations

import time

import pytest
from gevent.event import Event

from logd import stats as st
from logd.config import FsyncPolicy
from logd.errors import NotReplicated, from_reply
from logd.events import Handlers, Peer, WaitCommit
from logd.events.acks import ACK_TIMEOUTS, Acks, WaitAcks
from logd.events.commit import Commits
from logd.events.handlers import FollowerState
from logd.events.watermark import Watermark, confirmed
from logd.log.memory import MemoryLog
from logd.protocol import Head, Msg
from logd.protocol import replication as rp

LOCAL = Peer("127.0.0.1:5000", local=True)


def pos(id_: int) -> tuple[int, int, int]:
    return (1, id_ * 10, id_)


# -- the watermark ---------------------------------------------------------------------


def test_confirmed_is_synced_under_always_or_an_unknown_policy_else_written():
    written, synced = pos(9), pos(4)
    assert confirmed(written, synced, "always") == synced
    assert confirmed(written, synced, "") == synced  # an older follower that does not say
    assert confirmed(written, synced, "never") == written
    assert confirmed(written, synced, "interval:200") == written


@pytest.mark.parametrize("n, expect", [(1, 9), (2, 7), (3, 3), (4, 0)])
def test_the_nth_highest_report_is_the_watermark(n, expect):
    mark = Watermark(n)
    moved = mark.update([pos(3), pos(9), pos(7)], committed=100)
    assert (moved, mark.id) == (expect > 0, expect)
    if expect:
        assert mark.position == (1, expect * 10)


def test_the_watermark_never_moves_back_and_is_capped_by_the_commit():
    mark = Watermark(1)
    assert mark.update([pos(5)], committed=10) and mark.id == 5
    assert not mark.update([pos(2)], committed=10)  # a lagging follower takes nothing back
    assert not mark.update([], committed=10)  # nor does one that went away
    assert mark.id == 5
    assert mark.update([pos(20)], committed=12)  # a claim past the commit is capped
    assert (mark.id, mark.position) == (12, None)
    assert mark.count([pos(20), pos(11), pos(12)], 12) == 2
    with pytest.raises(ValueError):
        Watermark(0)


# -- the bookkeeping: Acks over FollowerState reports -----------------------------------


def make_acks(min_acks: int = 1, timeout: float = 5.0) -> tuple[Acks, dict[int, FollowerState], Commits]:
    followers: dict[int, FollowerState] = {}
    commits = Commits(10, (1, 100))
    acks = Acks(min_acks, timeout, commits, followers, lambda id_: (1, id_ * 10 - 10), st.Stats())
    return acks, followers, commits


def test_only_followers_with_a_hello_count_and_by_their_policy():
    acks, followers, _ = make_acks()
    followers[1] = FollowerState("a", "anon", written=pos(8), synced=pos(8))  # anonymous: no hello
    acks.on_report()
    assert acks.visible.committed == 0
    followers[2] = FollowerState("b", "f", written=pos(8), synced=pos(3), fsync="always", counted=True)
    acks.on_report()
    assert (acks.visible.committed, acks.visible.position) == (3, (1, 30))
    followers[2].fsync = "never"
    acks.on_report()
    assert acks.visible.committed == 8


def test_wait_returns_the_reply_once_confirmed_else_notreplicated_and_counts():
    acks, followers, _ = make_acks(min_acks=2, timeout=1.5)
    followers[1] = FollowerState("b", "f", written=pos(6), synced=pos(6), fsync="never", counted=True)
    followers[2] = FollowerState("c", "g", written=pos(4), synced=pos(4), fsync="never", counted=True)
    acks.on_report()
    done = acks.expect(3, 4, b"OK 4\r\n")
    assert acks.wait(done, Event()) == b"OK 4\r\n"
    late = WaitAcks(5, 6, b"OK 6\r\n", time.monotonic() - 1)  # its deadline has passed
    reply = acks.wait(late, Event())
    assert reply == (b"ERR NOTREPLICATED ids 5-6 are on the primary but only 1 of 2 followers "
                     b"confirmed them within 1.5 s; they may not survive a failover\r\n")
    exc = from_reply("ERR", reply[4:-2].decode())
    assert isinstance(exc, NotReplicated) and (exc.first, exc.last) == (5, 6)
    gone = Event()
    gone.set()  # the writer's peer went away: nothing to send, and no timeout counted
    assert acks.wait(acks.expect(7, 7, b"OK 7\r\n"), gone) == b""
    acks.stop()  # the server stops: a waiter is answered at once, before its deadline
    stopped = acks.wait(acks.expect(7, 7, b"OK 7\r\n"), Event())
    assert b"before the server stopped" in stopped
    assert acks.stats_() == {"min_acks": 2, "ack_timeout": 1.5, "acked_head": 4, ACK_TIMEOUTS: 2}


# -- the handlers ------------------------------------------------------------------------


def test_msg_replies_wait_for_acks_and_head_names_the_watermark():
    log = MemoryLog()
    handlers = Handlers(log, FsyncPolicy.parse("never"), st.Stats())
    handlers.acks, followers, _ = make_acks()
    log.append([b"x"] * 10)  # the commit source above says 10 committed
    reply = handlers.handle(Msg((b"a", b"b")), LOCAL)
    assert isinstance(reply, WaitAcks) and (reply.first, reply.last, reply.reply) == (11, 12, b"OK 12\r\n")
    assert handlers.handle(Head(), LOCAL) == b"OK 0\r\n"
    followers[1] = FollowerState("b", "f", written=pos(7), synced=pos(7), fsync="never", counted=True)
    handlers.acks.on_report()
    assert handlers.handle(Head(), LOCAL) == b"OK 7\r\n"
    # Under --fsync always the local commit comes first, then the acks.
    handlers.fsync = FsyncPolicy.parse("always")
    reply = handlers.handle(Msg((b"c",)), LOCAL)
    assert isinstance(reply, WaitCommit) and isinstance(reply.reply, WaitAcks)
    assert reply.reply.first == reply.reply.last == 13


def test_the_follower_hello_carries_its_fsync_policy():
    hello = rp.FollowerHello("h", 5, 0xABC, "f1", fsync="always")
    assert rp.decode_follower_hello(rp.encode_follower_hello(hello)) == hello
    import msgpack

    old = msgpack.packb({"history": None, "last_id": 0, "last_crc": 0})  # a follower that does not say
    assert rp.decode_follower_hello(old).fsync == ""
    with pytest.raises(ValueError, match="fsync"):
        rp.decode_follower_hello(msgpack.packb({"history": None, "last_id": 0, "last_crc": 0, "fsync": 1}))


def test_ack_timeout_0_waits_as_long_as_it_takes():
    acks, followers, _ = make_acks(timeout=0)
    w = acks.expect(1, 1, b"OK 1\r\n")
    assert w.deadline == float("inf")
    followers[1] = FollowerState("b", "f", written=pos(1), synced=pos(1), fsync="never", counted=True)
    acks.on_report()
    assert acks.wait(w, Event()) == b"OK 1\r\n"
