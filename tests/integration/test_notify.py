"""What systemd is told (issue 11, deploy/): the watchdog, STATUS=, EXTEND_TIMEOUT_USEC=, STOPPING=1.

Real ``logd serve`` and ``logd-follower`` processes; their ``$NOTIFY_SOCKET``
is the fixtures' datagram socket (notify.py), which records each datagram
with its sender's pid and the time it arrived.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path

import pytest

from logd.log.file import FileLog

from .notify import NotifySocket
from .test_connections import wait_for
from .wire import Wire

pytestmark = pytest.mark.integration

DEADLINE = 15.0



def pings(notify: NotifySocket, pid: int) -> list[float]:
    return [n.at for n in notify.with_line("WATCHDOG=1", pid)]


def statuses(notify: NotifySocket, pid: int) -> list[str]:
    return [line[len("STATUS="):] for n in notify.with_line("STATUS=", pid) for line in n.lines
            if line.startswith("STATUS=")]


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_watchdog_pings_at_half_the_interval_and_stop_while_the_fsync_is_wedged(
        logd_server, kind: str, tmp_path: Path) -> None:
    wedge = tmp_path / "wedge"
    srv = logd_server("--fsync", "always", "--stall-timeout", "0.5", notify=kind,
                      env={"WATCHDOG_USEC": "400000", "LOGD_FAULTS": f"fsync_wedge={wedge}"})
    pid = srv.proc.pid
    wait_for(lambda: len(pings(srv.notify, pid)) >= 6, what="six pings")
    gaps = [b - a for a, b in zip(pings(srv.notify, pid), pings(srv.notify, pid)[1:])]
    assert 0.15 <= statistics.median(gaps) <= 0.3, gaps  # half of 0.4 s
    ready = srv.notify.with_line("READY=1", pid)[0].at
    assert pings(srv.notify, pid)[0] >= ready  # the first ping follows READY

    wedge.touch()
    try:
        stopped_at = check_wedged(srv, pid)
    finally:
        wedge.unlink()  # else the fixture's SIGTERM would wait on the fsync too
    assert srv.w.line() == b"OK 1\r\n"  # nothing lost: the MSG is acked once the fsync returns
    srv.wait_event("watchdog_resumed")
    wait_for(lambda: [t for t in pings(srv.notify, pid) if t > stopped_at], what="pings again")


def check_wedged(srv, pid: int) -> float:
    w = srv.w = Wire(srv.host, srv.port, timeout=20)
    w.cmd("MSG", b"stuck")  # its fsync waits while the wedge file exists: no reply yet
    withheld = srv.wait_event("watchdog_withheld")
    assert withheld["reason"].startswith("an fsync has been running for ")
    stopped_at = time.monotonic()
    time.sleep(1.0)  # what is checked is that nothing arrives for a while: five ping periods
    late = [t for t in pings(srv.notify, pid) if t > stopped_at]
    assert late == [], "pings went on while the writer was wedged"
    assert srv.proc.poll() is None  # logd itself keeps running: systemd is the one to restart it
    return stopped_at


def test_pings_go_on_while_fsyncs_are_quick(logd_server) -> None:
    """The stall check does not fire on a writer that is merely busy."""
    srv = logd_server("--fsync", "always", "--stall-timeout", "0.5", env={"WATCHDOG_USEC": "200000"})
    w = Wire(srv.host, srv.port, timeout=20)
    began = time.monotonic()
    n = 0
    while time.monotonic() - began < 1.5:
        w.cmd("MSG", b"x" * 100)
        n += 1
        assert w.line() == f"OK {n}\r\n".encode()
    gaps = [b - a for a, b in zip(pings(srv.notify, srv.proc.pid), pings(srv.notify, srv.proc.pid)[1:])]
    assert len(gaps) >= 5 and max(gaps) < 0.5, gaps
    assert srv.events("watchdog_withheld") == []


def test_extend_timeout_ticks_while_a_slow_recovery_runs(logd_server, tmp_path: Path) -> None:
    data = tmp_path / "big"
    flog = FileLog(str(data), fsync=False, partition_size=2 << 20)
    for _ in range(400):
        flog.append([b"r" * 16] * 1000)  # 400,000 small records: about 1 s of full verification
    flog.close()
    # Pure Python: the native scanner verifies these in a fraction of a tick.
    srv = logd_server("--verify-on-start", "full", data_dir=data,
                      env={"LOGD_FAULTS": "progress_every=0.05", "LOGD_PURE": "1"})
    pid = srv.proc.pid
    got = srv.notify.texts(pid)
    ready = got.index(next(t for t in got if t.startswith("READY=1")))
    extends = [i for i, t in enumerate(got) if t.startswith("EXTEND_TIMEOUT_USEC=")]
    verified = srv.wait_event("log_verified")
    assert len(extends) >= 3, (verified, got)
    assert len(extends) == len(srv.events("verifying"))  # one per progress point
    assert all(got[i] == "EXTEND_TIMEOUT_USEC=10000000" for i in extends)
    assert extends[-1] < ready
    assert all(got[i + 1].startswith("STATUS=verifying partition ") for i in extends)
    times = [n.at for n in srv.notify.with_line("EXTEND_TIMEOUT_USEC=", pid)]
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.04  # at most one per tick
    assert got[ready] == "READY=1\nSTATUS=primary epoch 1: head 400000, synced 400000, no followers"


def test_status_of_a_primary_a_follower_and_a_read_replica(logd_server, follower) -> None:
    primary = logd_server("--fsync", "interval:20")
    f = follower(primary.addr, "--fsync", "never", "--name", "replica-a").wait_ready()
    ready = f.notify.with_line("READY=1", f.proc.pid)[0]
    assert ready.lines[1].startswith("STATUS=")  # READY carries the first status
    # The handshake's line is written before READY=1, but the fixture's pipe
    # reader may see it a moment after the datagram: wait for it.
    wait_for(lambda: f.events("link_state"), what="the handshake's link_state line")
    replica = logd_server("--refuse", data_dir=f.data_dir)
    w = Wire(primary.host, primary.port, timeout=10)
    for _ in range(5):
        w.cmd("MSG", b"a", b"b")
    assert [w.line() for _ in range(5)][-1] == b"OK 10\r\n"

    want_primary = "primary epoch 1: head 10, synced 10, 1 follower: replica-a lag 0"
    wait_for(lambda: want_primary in statuses(primary.notify, primary.proc.pid),
             what=f"{want_primary}; got {statuses(primary.notify, primary.proc.pid)}")
    want_follower = f"streaming (primary {primary.addr}): copy at id 10, primary head 10, lag 0 ids"
    wait_for(lambda: want_follower in statuses(f.notify, f.proc.pid), what=want_follower)
    want_replica = f"read replica of {primary.addr}: link streaming, head 10, lag 0 ids"
    wait_for(lambda: want_replica in statuses(replica.notify, replica.proc.pid), what=want_replica)

    # At most one STATUS= a second, however often the head moves.
    for _ in range(30):
        w.cmd("MSG", b"c")
        w.line()
        time.sleep(0.02)
    want_primary = "primary epoch 1: head 40, synced 40, 1 follower: replica-a lag 0"
    wait_for(lambda: want_primary in statuses(primary.notify, primary.proc.pid), what=want_primary)
    ready_at = primary.notify.with_line("READY=1", primary.proc.pid)[0].at
    times = [n.at for n in primary.notify.with_line("STATUS=", primary.proc.pid) if n.at >= ready_at]
    assert len(times) >= 3 and min(b - a for a, b in zip(times, times[1:])) >= 0.9, times

    f.proc.send_signal(signal.SIGTERM)
    assert f.wait_exit() == 0
    assert f.notify.texts(f.proc.pid)[-1].startswith("STOPPING=1")
    want_primary = "primary epoch 1: head 40, synced 40, no followers"
    wait_for(lambda: want_primary in statuses(primary.notify, primary.proc.pid), what=want_primary)
    wait_for(lambda: any(s.startswith(f"read replica of {primary.addr}: link stopped, head 40")
                         for s in statuses(replica.notify, replica.proc.pid)), what="the replica sees the link stop")


def test_follower_is_ready_only_after_its_handshake_unless_it_has_a_copy(logd_server, follower) -> None:
    primary = logd_server("--fsync", "never")
    addr = primary.addr
    assert primary.stop() == 0  # nobody listens there now
    f = follower(addr, "--max-backoff", "0.2")
    wait_for(lambda: len(f.events("reconnecting")) >= 3, what="a few failed attempts")
    assert f.notify.with_line("READY=1") == []  # an empty copy and no primary: not ready
    f.stop()

    primary.start()  # same data directory, a new port
    w = Wire(primary.host, primary.port, timeout=10)
    w.cmd("MSG", b"one")
    assert w.line() == b"OK 1\r\n"
    f = follower(primary.addr, "--fsync", "never", data_dir=f.data_dir).wait_ready()
    wait_for(lambda: f.events("follower_caught_up"), what="caught up")
    assert f.stop() == 0
    assert primary.stop() == 0
    f = follower(primary.addr, "--max-backoff", "0.2", data_dir=f.data_dir).wait_ready()  # a copy to serve
    # READY=1 can arrive before the log line is read from the follower's stderr.
    started = wait_for(lambda: f.events("follower_started"), what="the follower_started line")
    assert started[0]["head"] == 1
    status = [line for line in f.notify.with_line("READY=1", f.proc.pid)[0].lines if line.startswith("STATUS=")]
    assert status == [f"STATUS=connecting (primary {primary.addr}): copy at id 1, primary head 0, lag unknown"]
    assert f.stop() == 0


def test_stopping_on_sigterm_before_the_shutdown_work(logd_server) -> None:
    srv = logd_server()
    pid = srv.proc.pid
    os.kill(pid, signal.SIGTERM)
    assert srv.proc.wait(DEADLINE) == 0
    srv.ended_by_test.add(pid)
    got = srv.notify.texts(pid)
    assert got[-1] == "STOPPING=1" and got.count("STOPPING=1") == 1
    stopping = srv.notify.with_line("STOPPING=1", pid)[0].wall
    done = srv.wait_event("shutdown_complete")
    from datetime import datetime
    assert stopping <= datetime.fromisoformat(done["timestamp"].replace("Z", "+00:00")).timestamp() + 0.001
