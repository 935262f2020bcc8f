"""REPLICATE and logd-follower, with real processes over real sockets: the raw
frames equal the partition files, a follower's copy equals the primary's
(sha256 per partition) after catch-up, live following and kill -9, and the
refusals (another history, a second writer) keep the copy untouched."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from logd.errors import Diverged
from logd.protocol import NEED_DATA, encode_command
from logd.protocol import replication as rp

from .test_connections import stats, wait_for
from .wire import Wire

pytestmark = pytest.mark.integration

SMALL = ("--partition-size", "4k", "--fsync", "never")


def follower_lines(s: dict) -> list[str]:
    """The STATS lines of the connected followers, oldest connection first."""
    return [v for _, v in sorted((int(k.split("_")[1]), v) for k, v in s.items()
                                 if k.startswith("follower_"))]


def written_id(line: str) -> int:
    return int(line.split("written=")[1].split()[0].split(":")[2])


def write_many(server, count: int, first: int = 0, batch: int = 10) -> None:
    """``count`` messages in MSGs of ``batch``, pipelined on one connection."""
    w = Wire(server.host, server.port, 30.0)
    sent = 0
    for start in range(first, first + count, batch):
        bodies = [b"message %d %s" % (i, b"x" * (i % 50)) for i in range(start, min(start + batch, first + count))]
        w.cmd("MSG", *bodies)
        sent += 1
    for _ in range(sent):
        assert w.line().startswith(b"OK ")
    w.close()


def keep_writing(server, stop: threading.Event, n: int) -> None:
    """MSGs of 5 from id ``n + 1`` on, until ``stop`` (at most 20000 ids)."""
    while not stop.is_set() and n < 20000:
        write_many(server, 50, n, 5)
        n += 50


def newest_stream_writing(server, connections: int) -> bool:
    """The primary has served ``connections`` REPLICATEs, and the newest has written."""
    st = stats(server)
    lines = follower_lines(st)  # listed once its stream starts, just after the count
    return (st["replication_full_copies"] + st["replication_partial_resumes"] == connections
            and bool(lines) and written_id(lines[-1]) > 0)


def digests(directory: Path) -> dict[str, str]:
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(directory)) if name.endswith(".log")}


def copies_equal(primary: Path, copy: Path) -> bool:
    try:
        return copy.exists() and digests(primary) == digests(copy)
    except FileNotFoundError:  # a restarting follower removed an empty last partition
        return False


def meta_history(directory: Path) -> str:
    import json

    return json.loads((directory / "meta").read_text())["history"]


# -- the raw stream ----------------------------------------------------------------------


def _frames(sock: socket.socket, until, timeout: float = 20.0, parser: rp.FrameParser | None = None):
    parser, events = parser or rp.FrameParser(), []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        parser.receive_data(data)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
            if until(events):  # what follows the stream is not a frame
                return events
    raise AssertionError(f"stream incomplete after {timeout}s: {events[-3:]}")


def test_raw_replicate_frames_equal_the_partition_files(logd_server):
    srv = logd_server(*SMALL)
    write_many(srv, 600)
    files = digests(srv.data_dir)
    assert len(files) >= 4
    total = sum((srv.data_dir / n).stat().st_size for n in files)
    sock = srv.connect()
    sock.sendall(b"REPLICATE 0 0\r\n")  # inline, as typed into nc
    parser = rp.FrameParser()
    events = _frames(sock, lambda ev: any(isinstance(e, rp.HeadFrame) for e in ev), parser=parser)
    hello = events[0]
    assert isinstance(hello, rp.PrimaryHello)
    assert (hello.partition, hello.offset, hello.next_id, hello.head) == (1, 0, 1, 600)
    assert hello.history == meta_history(srv.data_dir)
    by_partition: dict[int, bytearray] = {}
    names = {}
    current = 1
    names[1] = hello.partition_first_id
    for e in events[1:]:
        if isinstance(e, rp.Next):
            assert e.partition == current + 1
            current = e.partition
            names[current] = e.first_id
        elif isinstance(e, rp.Data):
            assert e.partition == current
            got = by_partition.setdefault(e.partition, bytearray())
            assert e.offset == len(got)
            got += e.data
    assert sum(map(len, by_partition.values())) == total
    got = {f"{n:010d}-{names[n]:020d}.log": hashlib.sha256(b).hexdigest() for n, b in by_partition.items()}
    assert got == files
    head = [e for e in events if isinstance(e, rp.HeadFrame)][-1]
    assert head.id == 600
    sock.sendall(b"CLOSE\r\n")
    tail = _frames(sock, lambda ev: any(isinstance(e, rp.End) for e in ev), parser=parser)
    assert isinstance(tail[-1], rp.End)
    assert parser.buffered == 0 or sock.recv(10) == b""  # CLOSE's OK follows +EOF
    sock.close()


def test_bounded_replicate_ends_with_eof_and_ack_needs_a_stream(logd_server):
    srv = logd_server(*SMALL)
    write_many(srv, 400)
    sock = srv.connect()
    sock.sendall(b"ACK 1 0 0 1 0 0\r\n")
    assert sock.recv(200).startswith(b"ERR_CLIENT BADREQUEST ACK is only valid on a REPLICATE stream")
    sock.sendall(b"REPLICATE 2 3\r\n")
    events = _frames(sock, lambda ev: any(isinstance(e, rp.End) for e in ev))
    assert {e.partition for e in events if isinstance(e, rp.Data)} == {2, 3}
    sock.sendall(b"PING\r\n")  # the connection goes on after +EOF
    assert sock.recv(100) == b"PONG\r\n"
    sock.sendall(b"REPLICATE 99 0\r\n")
    assert sock.recv(300).startswith(b"ERR_CLIENT RANGE no position 99:0")
    sock.close()


# -- the follower -----------------------------------------------------------------------


def test_follower_catches_up_follows_live_and_shows_in_stats(logd_server, follower):
    srv = logd_server(*SMALL)
    write_many(srv, 1500)
    f = follower(srv.addr, "--fsync", "interval:50", "--name", "replica-a")
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    assert len(digests(f.data_dir)) >= 8
    assert meta_history(f.data_dir) == meta_history(srv.data_dir)
    writer = threading.Thread(target=write_many, args=(srv, 1500, 1500, 3))
    writer.start()
    writer.join(60)
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="live following")
    def at_lag_zero() -> dict | None:
        st = stats(srv)
        return st if st["followers"] == 1 and " lag_ids=0 " in follower_lines(st)[0] else None

    data = wait_for(at_lag_zero, timeout=30, what="follower listed at lag 0")
    line = follower_lines(data)[0]
    assert "name=replica-a" in line and written_id(line) == 3000
    # `logd stats` shows the followers as a table a person can read.
    out = subprocess.run([sys.executable, "-m", "logd", "stats", "-H", srv.addr, "-o", "text"],
                         capture_output=True, timeout=30, check=True).stdout.decode().splitlines()
    header = next(i for i, text in enumerate(out) if text.split()[:2] == ["ADDRESS", "NAME"])
    row = out[header + 1].split()
    assert row[1] == "replica-a" and row[2].endswith(":3000") and row[4] == "0", out[header:]
    assert "last_report=never" not in line
    assert data["replication_full_copies"] == 1
    assert f.stop() == 0
    assert wait_for(lambda: stats(srv)["followers"] == 0, timeout=30, what="follower gone from STATS")
    # Restarted, it resumes from its own tail: a partial resume, no copy.
    f2 = follower(srv.addr, data_dir=f.data_dir)
    wait_for(lambda: stats(srv)["replication_partial_resumes"] == 1, timeout=30, what="partial resume")
    assert f2.stop() == 0
    assert stats(srv)["replication_full_copies"] == 1


def test_follower_killed_mid_stream_resumes_without_a_full_copy(logd_server, follower):
    srv = logd_server(*SMALL)
    write_many(srv, 500)
    f = follower(srv.addr, "--fsync", "never")
    stop = threading.Event()
    writer = threading.Thread(target=keep_writing, args=(srv, stop, 500))
    writer.start()
    try:
        for kill in range(5):
            # The newest connection (this process's) has written something: kill -9
            # mid-stream, under continuous writes, five times.
            wait_for(lambda: newest_stream_writing(srv, kill + 1), timeout=30, what="follower writing")
            f.stop(signal.SIGKILL)
            f = follower(srv.addr, "--fsync", "never", data_dir=f.data_dir)
    finally:
        stop.set()
        writer.join(60)
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=60, what="equal after kills")
    # The last follower's copy may have been equal before it connected (a fast
    # copy finished before the kill): wait for its REPLICATE to be counted.
    wait_for(lambda: stats(srv)["replication_full_copies"] + stats(srv)["replication_partial_resumes"] == 6,
             timeout=30, what="the last follower's REPLICATE")
    s = stats(srv)
    assert s["replication_full_copies"] == 1
    assert s["replication_partial_resumes"] == 5
    assert f.stop() == 0


def test_primary_with_a_new_history_is_refused_and_the_copy_kept(logd_server, follower, tmp_path):
    srv = logd_server(*SMALL)
    write_many(srv, 300)
    f = follower(srv.addr)
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    port = srv.port
    before = digests(f.data_dir)
    assert srv.stop() == 0
    # The primary comes back on an empty directory, on the same port: another history.
    new = logd_server(*SMALL, "--port", str(port), data_dir=tmp_path / "empty")
    write_many(new, 10)
    assert f.wait_exit(30) == 11
    assert digests(f.data_dir) == before
    refused = f.events("replication_refused")
    assert refused and refused[-1]["code"] == Diverged.code
    assert "history differs" in refused[-1]["reason"]


def test_a_second_follower_on_the_same_directory_is_refused_naming_the_holder(logd_server, follower):
    srv = logd_server(*SMALL)
    write_many(srv, 50)
    first = follower(srv.addr)
    wait_for(lambda: copies_equal(srv.data_dir, first.data_dir), timeout=30, what="catch-up")
    second = follower(srv.addr, data_dir=first.data_dir)
    assert second.wait_exit(20) == 1
    failed = second.events("startup_failed")
    assert failed and f"pid {first.proc.pid} (logd-follower" in failed[-1]["error"]
    assert first.proc.poll() is None
    assert first.stop() == 0


def test_follower_hello_over_the_wire_refuses_a_follower_ahead(logd_server):
    srv = logd_server(*SMALL)
    write_many(srv, 20)
    hello = rp.encode_follower_hello(rp.FollowerHello(meta_history(srv.data_dir), 500, 1, "x"))
    sock = srv.connect()
    sock.sendall(encode_command("REPLICATE", 1, 0, 100000, hello))
    line = sock.recv(400)
    assert line.startswith(b"ERR_CLIENT DIVERGED the follower is ahead of the primary")
    assert line.endswith(b"(partition=1 offset=100000 id=500)\r\n")
    sock.close()


def test_a_corrupt_record_on_the_primary_is_never_written(logd_server, follower):
    from .test_client import flip_byte

    srv = logd_server()
    w = Wire(srv.host, srv.port, 10.0)
    for i in range(1, 41):
        w.cmd("MSG", b"record-%04d" % i)
    for _ in range(40):
        assert w.line().startswith(b"OK ")
    w.close()
    assert srv.stop() == 0
    flip_byte(srv.data_dir, b"record-0020", 7)
    bad = logd_server("--allow-corrupt", "--verify-on-start", "full", data_dir=srv.data_dir)
    f = follower(bad.addr)
    lost = wait_for(lambda: [e for e in f.events("link_lost") if "record 20" in e["error"]],
                    timeout=30, what="the stream ended before record 20")
    assert "CORRUPT" in lost[0]["error"] or "fails its checks" in lost[0]["error"]
    (name,) = digests(srv.data_dir)
    primary = (srv.data_dir / name).read_bytes()
    copy = (f.data_dir / name).read_bytes()
    assert copy == primary[: primary.index(b"+20 ")]  # records 1-19, byte for byte, and no more
    assert f.proc.poll() is None  # it keeps retrying: the primary may be repaired
    assert f.stop() == 0


def test_primary_with_fewer_records_is_refused_as_diverged(logd_server, follower, tmp_path):
    import shutil

    srv = logd_server(*SMALL)
    write_many(srv, 100)
    port = srv.port
    assert srv.stop() == 0
    snapshot = tmp_path / "older"
    shutil.copytree(srv.data_dir, snapshot)  # the same history, 100 records
    srv.restart(*SMALL, "--port", str(port))
    write_many(srv, 200, 100)
    f = follower(srv.addr)
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    before = digests(f.data_dir)
    assert srv.stop() == 0
    # It comes back without the last 200 records (say, writes it had not fsynced).
    logd_server(*SMALL, "--port", str(port), data_dir=snapshot)
    assert f.wait_exit(30) == 11
    assert digests(f.data_dir) == before
    reason = f.events("replication_refused")[-1]["reason"]
    assert "ahead of the primary" in reason


def test_follower_rides_out_primary_restarts_under_load(logd_server, follower):
    srv = logd_server(*SMALL)
    port = srv.port
    write_many(srv, 300)
    f = follower(srv.addr, "--max-backoff", "0.5")
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    for round_ in range(3):
        write_many(srv, 300, 300 * (round_ + 1), 3)
        assert srv.stop() == 0
        srv.restart(*SMALL, "--port", str(port))
    write_many(srv, 300, 1200)
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=60, what="equal after restarts")
    s = stats(srv)
    assert (s["replication_full_copies"], s["replication_partial_resumes"]) == (0, 1), f.logs[-30:]
    assert len(f.events("link_lost")) >= 3 and f.proc.poll() is None
    assert f.stop() == 0


def test_a_read_replica_serves_what_the_follower_copies_and_names_the_primary(logd_server, follower):
    """primary -> logd-follower -> logd serve --refuse: a tail on the replica gets
    every message written on the primary, in order, and MSG there names the primary."""
    import logd
    from logd.errors import Refused

    srv = logd_server(*SMALL)
    write_many(srv, 200)
    f = follower(srv.addr, "--fsync", "never")
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    replica = logd_server("--refuse", data_dir=f.data_dir)
    got: list[int] = []
    done = threading.Event()

    def tail() -> None:
        with logd.connect(replica.addr, timeout=10) as client:
            for rec in client.follow(1, idle_timeout=10):
                got.append(rec.id)
                if rec.id == 700:
                    done.set()
                    return

    t = threading.Thread(target=tail, daemon=True)
    t.start()
    write_many(srv, 500, 200, 5)  # while the tail is open: across partition rolls
    assert done.wait(30), f"the replica's tail got {len(got)} of 700"
    t.join(10)
    assert got == list(range(1, 701))
    assert wait_for(lambda: stats(replica).get("link") == "streaming", timeout=10, what="link streaming")
    with logd.connect(replica.addr) as client:
        with pytest.raises(Refused) as info:
            client.append(b"not here")
    assert info.value.primary == srv.addr
    assert stats(replica)["primary"] == srv.addr
    assert replica.stop() == 0 and f.stop() == 0
