"""Synchronous replication (--min-acks), with real primaries and followers: a
MSG's OK comes only once the follower has its bytes on disk; with the
follower stopped the MSG gets ERR NOTREPLICATED after --ack-timeout and stays
on the primary; readers of the primary see only the acknowledged watermark;
and a primary killed right after a burst of acknowledged MSGs loses none of
them: every one is in the follower's copy, at its id."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from logd import record

from .test_connections import stats, wait_for
from .test_replication import follower_lines
from .wire import Wire

pytestmark = pytest.mark.integration


def copy_records(directory: Path) -> dict[int, bytes]:
    """Every whole record in a copy's partition files, by id (a torn last one is left out)."""
    out: dict[int, bytes] = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".log"):
            continue
        buf = (directory / name).read_bytes()
        pos = 0
        while (got := record.parse(buf, pos)) is not None:
            rec, pos = got
            out[rec.id] = rec.body
    return out


def ok_id(line: bytes) -> int:
    assert line.startswith(b"OK "), line
    return int(line[3:-2])


def follower_ids(server) -> list[tuple[int, int]]:
    """(written id, synced id) of each connected follower, from the primary's STATS."""
    out = []
    for line in follower_lines(stats(server)):
        written = int(line.split("written=")[1].split()[0].split(":")[2])
        synced = int(line.split("synced=")[1].split()[0].split(":")[2])
        out.append((written, synced))
    return out


def start_pair(logd_server, follower, *flags: str, follower_flags: tuple[str, ...] = (), followers: int = 1):
    srv = logd_server("--fsync", "never", *flags)
    fols = [follower(srv.addr, "--max-backoff", "0.5", *follower_flags) for _ in range(followers)]
    wait_for(lambda: stats(srv)["followers"] == followers, what="followers connected")
    return srv, fols


def records_from(w: Wire, count: int, timeout: float = 10.0) -> list[tuple[int, bytes]]:
    """``count`` records from a READ stream (after its OK line)."""
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        parsed = record.parse(w.buf)
        if parsed is None:
            assert time.monotonic() < deadline, f"only {got} within {timeout}s"
            w.buf += w._recv(deadline, "records") or b""
            continue
        rec, end = parsed
        w.buf = w.buf[end:]
        got.append((rec.id, rec.body))
    return got


NOTREPLICATED = re.compile(
    rb"ERR NOTREPLICATED ids (\d+)-(\d+) are on the primary but only (\d+) of (\d+) followers "
    rb"confirmed them within ([\d.]+) s; they may not survive a failover\r\n")


@pytest.mark.parametrize("policy", ["always", "never"])
def test_ok_arrives_only_once_the_follower_has_the_bytes(logd_server, follower, policy):
    srv, (fol,) = start_pair(logd_server, follower, "--min-acks", "1",
                             follower_flags=("--fsync", policy))
    w = Wire(srv.host, srv.port)
    for i in range(15):
        bodies = [b"m%d.%d" % (i, j) for j in range(i % 3 + 1)]
        w.cmd("MSG", *bodies)
        last = ok_id(w.line())
        # At the moment the OK arrives, the copy on disk holds the MSG ...
        have = copy_records(fol.data_dir)
        first = last - len(bodies) + 1
        assert [have.get(n) for n in range(first, last + 1)] == bodies
        # ... and under the follower's --fsync always, its report said fsynced.
        ((written, synced),) = follower_ids(srv)
        assert written >= last
        if policy == "always":
            assert synced >= last
    s = w.stats()
    assert (s["min_acks"], s["ack_timeout"], s["ack_timeouts"]) == (1, 5.0, 0)
    assert s["acked_head"] == s["head"] == last
    w.cmd("HEAD")
    assert ok_id(w.line()) == last
    w.close()


def test_follower_stopped_msg_times_out_readers_wait_for_the_watermark(logd_server, follower):
    srv, (fol,) = start_pair(logd_server, follower, "--min-acks", "1", "--ack-timeout", "2")
    w = Wire(srv.host, srv.port)
    w.cmd("MSG", b"a")
    assert ok_id(w.line()) == 1
    tail = Wire(srv.host, srv.port)
    tail.cmd("READ", 1, 0)
    assert tail.line() == b"OK\r\n"
    assert records_from(tail, 1) == [(1, b"a")]

    assert fol.proc is not None
    os.kill(fol.proc.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        w.cmd("MSG", b"b", b"c")
        w.cmd("MSG", b"d")
        w.cmd("PING")  # pipelined behind them: answered in order, after both
        other = Wire(srv.host, srv.port)  # other connections are served meanwhile
        wait_for(lambda: other.stats()["head"] == 4, timeout=1.5, what="both MSGs written")
        s = other.stats()
        assert (s["head"], s["acked_head"]) == (4, 1)
        other.cmd("HEAD")
        assert ok_id(other.line()) == 1  # HEAD names the watermark
        assert w.nothing_pending(0.01)  # ... answered while the MSGs still wait
        line = w.line()
        waited = time.monotonic() - began
        m = NOTREPLICATED.fullmatch(line)
        assert m, line
        assert m.groups() == (b"2", b"3", b"0", b"1", b"2")
        assert 1.9 <= waited < 6.0, waited
        assert NOTREPLICATED.fullmatch(w.line()).groups()[:2] == (b"4", b"4")
        assert w.line() == b"PONG\r\n"
        # Not taken back: the ids are on the primary, but no reader sees them yet.
        s = other.stats()
        assert (s["head"], s["acked_head"], s["ack_timeouts"]) == (4, 1, 2)
        assert tail.nothing_pending(0.3)
        late = Wire(srv.host, srv.port)
        late.cmd("READ", 2, 3)
        assert late.line() == b"OK\r\n"
        assert late.nothing_pending(0.3)  # a bounded READ of them waits too
    finally:
        os.kill(fol.proc.pid, signal.SIGCONT)
    # The follower confirms them: readers get them, HEAD moves.
    assert records_from(tail, 3) == [(2, b"b"), (3, b"c"), (4, b"d")]
    assert records_from(late, 3) == [(2, b"b"), (3, b"c"), (4, b"d")]
    assert late.line() == b"+EOF\r\n"
    wait_for(lambda: stats(srv)["acked_head"] == 4, what="watermark at 4")
    other.cmd("HEAD")
    assert ok_id(other.line()) == 4
    w.cmd("MSG", b"e")
    assert ok_id(w.line()) == 5
    for c in (w, tail, other, late):
        c.close()


def test_killed_follower_and_two_of_two(logd_server, follower):
    srv, (f1, f2) = start_pair(logd_server, follower, "--min-acks", "2", "--ack-timeout", "1",
                               followers=2)
    w = Wire(srv.host, srv.port)
    w.cmd("MSG", b"x", b"y")
    assert ok_id(w.line()) == 2
    for f in (f1, f2):
        assert copy_records(f.data_dir) == {1: b"x", 2: b"y"}
    f2.proc.kill()
    f2.proc.wait(10)
    wait_for(lambda: stats(srv)["followers"] == 1, what="the killed follower gone")
    w.cmd("MSG", b"z")
    m = NOTREPLICATED.fullmatch(w.line())
    assert m and m.groups() == (b"3", b"3", b"1", b"2", b"1"), m
    assert copy_records(f1.data_dir)[3] == b"z"  # one follower has it: not enough
    # The client raises the error's class, carrying the ids.
    from logd.errors import NotReplicated, from_reply

    exc = from_reply("ERR", m.group(0)[4:-2].decode())
    assert isinstance(exc, NotReplicated) and (exc.first, exc.last) == (3, 3)
    w.close()


def test_unplanned_failover_loses_no_acknowledged_message(logd_server, follower):
    srv, (fol,) = start_pair(logd_server, follower, "--min-acks", "1", "--ack-timeout", "10",
                             follower_flags=("--fsync", "never"))
    acked: dict[int, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            w = Wire(srv.host, srv.port, 10.0)
            sent: list[list[bytes]] = []
            for seq in range(100000):
                if stop.is_set():
                    break
                bodies = [b"w%d-%d-%d" % (n, seq, j) for j in range(1 + seq % 4)]
                w.cmd("MSG", *bodies)
                sent.append(bodies)
                if len(sent) >= 8:  # pipelined, 8 in flight
                    last = ok_id(w.line())
                    done = sent.pop(0)
                    with lock:
                        for k, b in enumerate(done):
                            acked[last - len(done) + 1 + k] = b
        except (OSError, AssertionError):
            pass  # the primary was killed under us: what was acknowledged is counted

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 600, timeout=60, what="600 acknowledged messages")
    srv.kill()  # kill -9, in the middle of the burst
    stop.set()
    for t in threads:
        t.join(20)
    assert len(acked) >= 600
    copy = copy_records(fol.data_dir)
    missing = sorted(set(acked) - set(copy))
    assert not missing, f"{len(missing)} acknowledged ids not on the follower: {missing[:10]}"
    assert all(copy[i] == body for i, body in acked.items())
    fol.stop()


def test_graceful_stop_answers_a_waiting_msg(logd_server, follower):
    srv, (fol,) = start_pair(logd_server, follower, "--min-acks", "1", "--ack-timeout", "60",
                             "--shutdown-timeout", "1")
    w = Wire(srv.host, srv.port, 20.0)
    w.cmd("MSG", b"a")
    assert ok_id(w.line()) == 1
    assert fol.proc is not None
    os.kill(fol.proc.pid, signal.SIGSTOP)
    try:
        w.cmd("MSG", b"b")
        wait_for(lambda: stats(srv)["head"] == 2, what="the MSG written")
        began = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        line = w.line()
        assert line == (b"ERR NOTREPLICATED ids 2-2 are on the primary but only 0 of 1 followers "
                        b"confirmed them before the server stopped; they may not survive a failover\r\n")
        assert time.monotonic() - began < 10  # the stop waited for the follower, bounded
        assert srv.stop() == 0
    finally:
        os.kill(fol.proc.pid, signal.SIGCONT)
    assert 2 in copy_records(srv.data_dir)


def test_restarted_primary_watermark_comes_back_with_the_follower(logd_server, follower):
    srv, (fol,) = start_pair(logd_server, follower, "--min-acks", "1")
    port = srv.port
    w = Wire(srv.host, srv.port)
    for body in (b"a", b"b", b"c"):
        w.cmd("MSG", body)
        ok_id(w.line())
    w.close()
    # The watermark is not persisted: the restarted primary starts it at 0, and
    # the follower's first report on reconnecting (its whole copy) brings it back.
    srv.restart("--fsync", "never", "--min-acks", "1", "--port", str(port))
    wait_for(lambda: stats(srv)["acked_head"] == 3, what="the watermark back at 3")
    r = Wire(srv.host, srv.port)
    r.cmd("READ", 1, 3)
    assert r.line() == b"OK\r\n"
    assert records_from(r, 3) == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert r.line() == b"+EOF\r\n"
    r.close()
