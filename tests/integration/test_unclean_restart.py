"""The unclean-restart peer check (issue 10, "the unplanned case"), on real processes.

A primary killed with -9 whose follower's read replica was promoted meanwhile
comes back refusing, naming the new primary; with its peers down it comes
back refusing and says why; a clean restart (SIGTERM) asks nobody.
"""

from __future__ import annotations

import time

import pytest

import logd
from logd.errors import Refused
from logd.protocol import replication as rp

from .test_failover_commands import head_of, meta, wait_for, write
from .wire import Wire

pytestmark = pytest.mark.integration


def stats_of(addr: str) -> dict:
    with logd.connect(addr) as client:
        return client.stats()


def advertise(primary, address: str) -> None:
    """A REPLICATE hello that advertises ``address`` (as ``logd-follower
    --advertise`` sends; here for addresses where no replica runs)."""
    w = Wire(primary.host, primary.port)
    w.cmd("REPLICATE", 0, 0, 0, rp.encode_follower_hello(rp.FollowerHello(None, 0, 0, "probe",
                                                                            advertise=address)))
    assert w.read_until(b"\r\n").startswith(b"OK ")
    w.sock.close()
    wait_for(lambda: address in meta(primary.data_dir).get("followers", []), 10, "the address recorded")


def replica_of(logd_server, follower, a, n: int):
    """A follower of ``a`` with all ``n`` messages, and a read replica over its copy."""
    f = follower(a.addr, "--max-backoff", "0.5")
    wait_for(lambda: head_of(f.data_dir) == n, 30, "the follower to catch up")
    b = logd_server("--refuse", data_dir=f.data_dir)
    return f, b


def test_killed_primary_whose_replica_was_promoted_comes_back_refusing(logd_server, follower) -> None:
    a = logd_server()
    write(a.addr, 20)
    f, b = replica_of(logd_server, follower, a, 20)
    # B's port is known now: the follower, restarted with --advertise B, says it in its hello.
    assert f.stop() == 0
    f = follower(a.addr, "--max-backoff", "0.5", "--advertise", b.addr, data_dir=f.data_dir)
    wait_for(lambda: meta(a.data_dir).get("followers") == [b.addr], 30, "A to record B")
    a.kill()  # unplanned: no clean marker
    assert f.stop() == 0
    with logd.connect(b.addr) as client:
        assert client.accept() == (2, 21, True)
        assert client.append(b"on B") == range(21, 22)
    started = time.monotonic()
    a.start()
    assert time.monotonic() - started < 10
    check = a.wait_event("peer_check")
    assert (check["peers"], check["epoch"], check["timeout"]) == ([b.addr], 1, 3.0)
    answer = a.wait_event("peer_answer")
    assert (answer["peer"], answer["role"], answer["epoch"], answer["error"]) == (b.addr, "primary", 2, "")
    refusing = a.wait_event("peer_check_refusing")
    assert refusing["new_primary"] == b.addr
    reason = (f"unclean restart: peer {b.addr} is primary in epoch 2, above this server's 1; "
              f"the new primary is {b.addr}")
    assert refusing["reason"] == reason
    assert a.wait_event("listening")["role"] == "refusing"
    st = stats_of(a.addr)
    assert (st["role"], st["new_primary"], st["refusing_reason"], st["higher_epoch_seen"], st["head"]) == (
        "refusing", b.addr, reason, f"2 from {b.addr}", 20)
    with logd.connect(a.addr) as client:
        with pytest.raises(Refused) as info:
            client.append(b"split brain?")
        assert info.value.primary == b.addr
    doc = meta(a.data_dir)
    assert (doc["role"], doc["primary"], doc["epochs"]) == ("refusing", b.addr, [[1, 1]])
    # Persisted: a later restart, clean or not, still refuses.
    a.kill()
    a.start()
    assert stats_of(a.addr)["role"] == "refusing"


def test_killed_primary_with_its_peers_down_comes_back_refusing_and_says_why(logd_server, follower) -> None:
    a = logd_server("--peer-timeout", "1")
    write(a.addr, 5)
    advertise(a, "127.0.0.1:1")  # a follower whose replica is not running (nothing listens there)
    a.kill()
    a.flags = ("--peer-timeout", "1", "--peer", "127.0.0.1:2", "--peer", "127.0.0.1:1,127.0.0.1:3")
    started = time.monotonic()
    a.start()
    assert time.monotonic() - started < 10
    assert a.wait_event("peer_check")["peers"] == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    refusing = a.wait_event("peer_check_refusing")
    assert refusing["new_primary"] == ""
    assert refusing["reason"].startswith("unclean restart: no peer answered within 1s (127.0.0.1:1: "
                                         "cannot connect to 127.0.0.1:1: [Errno 111] Connection refused; ")
    assert refusing["reason"].endswith("); an operator must ACCEPT (logd accept) once sure no other "
                                       "server was promoted")
    st = stats_of(a.addr)
    assert (st["role"], st["refusing_reason"], st["new_primary"]) == ("refusing", refusing["reason"], "")
    with logd.connect(a.addr) as client:
        with pytest.raises(Refused):
            client.append(b"x")
        assert client.accept() == (2, 6, True)  # the operator's call
        assert client.append(b"y") == range(6, 7)


def test_a_peer_in_the_same_epoch_lets_it_start_as_primary(logd_server, follower) -> None:
    a = logd_server()
    write(a.addr, 5)
    _, b = replica_of(logd_server, follower, a, 5)  # not promoted: still a replica in epoch 1
    a.kill()
    a.flags = ("--peer", b.addr)
    a.start()
    assert a.wait_event("peer_answer")["epoch"] == 1
    assert a.wait_event("peer_check_passed")["answered"] == [b.addr]
    assert stats_of(a.addr)["role"] == "primary"
    assert write(a.addr, 1) == [range(6, 7)]


def test_a_clean_restart_and_a_new_directory_ask_nobody(logd_server, tmp_path) -> None:
    a = logd_server("--peer", "127.0.0.1:1")  # a new directory: nothing to protect, no check
    write(a.addr, 3)
    advertise(a, "127.0.0.1:2")
    assert a.stop() == 0  # clean: the marker says nothing was lost or replaced behind it
    a.start()
    assert stats_of(a.addr)["role"] == "primary"
    assert not a.events("peer_check") and write(a.addr, 1) == [range(4, 5)]
