"""A read replica: ``logd serve --refuse`` on a directory another process writes.

The writer is a ``FileLog`` opened in this test process on the same
directory (it holds the writer lock, as the follower will); the replica is a
real ``logd serve --refuse`` process, reached over real sockets.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

import logd
from logd.errors import Refused
from logd.log import status as status_file
from logd.log.file import FileLog
from logd.record import encode

from ..unit.test_read_only_log import snapshot  # what "nothing written" means
from .wire import Wire

pytestmark = pytest.mark.integration


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[FileLog]:
    flog = FileLog(str(tmp_path / "copy"), partition_size=4096, index_interval=512, fsync=False)
    try:
        yield flog
    finally:
        flog.close()


def append(flog: FileLog, n: int, tag: bytes = b"m") -> list[bytes]:
    bodies = [tag + b"%05d" % (flog.head() + i) for i in range(1, n + 1)]
    for body in bodies:
        flog.append([body])
    return bodies


def test_msg_is_refused_naming_the_primary_and_reads_are_served(logd_server, writer: FileLog) -> None:
    got = append(writer, 30)
    replica = logd_server("--refuse", data_dir=writer.directory)
    w = Wire(replica.host, replica.port)
    w.cmd("MSG", b"nope")
    line = w.read_until(b"\r\n")
    w.sock.close()
    assert line.startswith(b"ERR_CLIENT REFUSED ") and b"primary is not known" in line, line
    status_file.save(writer.directory, status_file.FollowerStatus(
        primary="10.9.8.7:1774", link="streaming", primary_head=30, updated=time.time()))
    with logd.connect(replica.addr) as client:
        deadline = time.monotonic() + 5
        while client.stats()["primary"] != "10.9.8.7:1774":  # the status file is read at a change
            assert time.monotonic() < deadline, client.stats()
            time.sleep(0.02)
        with pytest.raises(Refused) as refused:
            client.append(b"nope")
        assert refused.value.primary == "10.9.8.7:1774"
        assert [r.body for r in client.read(1, limit=30)] == got
        assert client.head() == 30
        st = client.stats()
        assert (st["role"], st["head"], st["link"], st["primary_head"], st["lag_ids"]) == (
            "replica", 30, "streaming", 30, 0)
        assert st["watch"] == "inotify" and st["refreshes"] >= 1 and st["cmd_msg_errors"] == 2
        assert st["writer"].startswith(f"pid {os.getpid()} ")
    assert writer.head() == 30  # nothing was written through the replica


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_a_tail_on_the_replica_gets_every_append_in_order_across_rolls(logd_server, writer: FileLog,
                                                                       watch: str) -> None:
    """Also the latency figures of docs/server.rst ("Read replicas"): run with -s."""
    first = append(writer, 5)
    replica = logd_server("--refuse", "--watch", watch, "--watch-interval", "0.05",
                          data_dir=writer.directory)
    total = 1005  # ~27 bytes a record, 4 KiB partitions: six rolls
    received: list[tuple[int, bytes, float]] = []
    ready = threading.Event()

    def tail() -> None:
        with logd.connect(replica.addr, timeout=10) as client:
            for rec in client.follow(1, idle_timeout=10):
                received.append((rec.id, rec.body, time.monotonic()))
                if rec.id == 5:
                    ready.set()
                if len(received) == total:
                    return

    t = threading.Thread(target=tail, daemon=True)
    t.start()
    assert ready.wait(10)
    sent: dict[int, float] = {}
    bodies = list(first)
    parts_before = len(writer.partitions())
    for _ in range(total - 5):
        sent[writer.head() + 1] = time.monotonic()
        bodies += append(writer, 1)
        time.sleep(0.002)  # pacing the writer (a few hundred a second), not waiting for anything
    t.join(20)
    assert not t.is_alive(), f"tail got {len(received)} of {total}"
    assert [i for i, _, _ in received] == list(range(1, total + 1))  # in order, no gaps
    assert [b for _, b, _ in received] == bodies
    assert len(writer.partitions()) > parts_before + 5  # it crossed partition rolls
    lat = sorted((at - sent[i]) * 1000 for i, _, at in received if i in sent)
    p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99)]
    print(f"\nreplica --watch {watch}: write-to-receive over {len(lat)} records: "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    if watch == "inotify":
        assert p50 < 20, (p50, p99)  # about a millisecond, not a polling period


def test_the_replica_never_writes_its_directory(logd_server, writer: FileLog, tmp_path: Path) -> None:
    append(writer, 200)  # several partitions, with .idx files, meta and lock
    writer.close()  # the clean marker too; and nobody holds the lock
    d = Path(writer.directory)
    before = snapshot(d)
    assert "meta" in before and any(n.endswith(".idx") for n in before)
    replica = logd_server("--refuse", data_dir=d)
    with logd.connect(replica.addr) as client:
        assert len(list(client.read(1, limit=200))) == 200
        with pytest.raises(Refused):
            client.append(b"x")
        assert client.stats()["writer"] == "none"
    with logd.connect(replica.addr) as client:
        tail = client.follow(195, idle_timeout=5)
        assert [next(tail).id for _ in range(6)] == list(range(195, 201))
        tail.close()
    follow = Wire(replica.host, replica.port)
    follow.cmd("READ", 201, 0)  # a tail at the head, attached while the replica stops
    assert follow.read_until(b"OK\r\n") == b"OK\r\n"
    assert replica.stop() == 0  # SIGTERM: exit 0
    assert follow.read_until(b"\r\n").startswith(b"ERR SHUTDOWN")
    follow.sock.close()
    assert snapshot(d) == before  # no meta adoption, recovery point, clean marker, index, lock


def test_a_replica_started_mid_msg_shows_only_whole_msgs(logd_server, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    flog = FileLog(str(d), fsync=False)
    flog.append([b"a", b"b"])
    active = flog.partitions()[-1].path
    flog.close()
    msg = encode(3, b"c", more=2) + encode(4, b"d", more=1) + encode(5, b"e", more=0)
    cut = len(encode(3, b"c", more=2)) + 5  # the writer is inside the MSG's second record
    with open(active, "ab") as f:
        f.write(msg[:cut])
    replica = logd_server("--refuse", data_dir=d)
    with logd.connect(replica.addr) as client:
        assert client.head() == 2
        assert [r.body for r in client.read(1, limit=2)] == [b"a", b"b"]
    tail = Wire(replica.host, replica.port)
    tail.cmd("READ", 3, 0)  # follow, from the MSG's first record
    assert tail.read_until(b"OK\r\n") == b"OK\r\n"
    with open(active, "ab") as f:
        f.write(msg[cut:])  # the MSG is whole now
    assert tail.read_exact(len(msg)) == msg  # the whole MSG at once, byte for byte
    tail.sock.close()
    with logd.connect(replica.addr) as client:
        assert client.head() == 5


def test_retention_on_the_writer_is_followed(logd_server, writer: FileLog) -> None:
    append(writer, 400)
    replica = logd_server("--refuse", data_dir=writer.directory)
    with logd.connect(replica.addr) as client:
        assert client.stats()["first_id"] == 1
        assert writer.retain(max_bytes=8192)
        deadline = time.monotonic() + 5
        while client.stats()["first_id"] != writer.first_id():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [r.id for r in client.read(writer.first_id(), limit=3)] == [
            writer.first_id() + i for i in range(3)]


def test_a_missing_directory_fails_the_start_and_creates_nothing(tmp_path: Path) -> None:
    import subprocess
    import sys

    d = tmp_path / "nope"
    proc = subprocess.run([sys.executable, "-m", "logd", "serve", "--refuse", "--port", "0",
                           "--data-dir", str(d), "--log-format", "json"],
                          capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert b"startup_failed" in proc.stderr and b"does not exist" in proc.stderr
    assert not d.exists()


def test_a_replica_beside_a_real_server_writing_the_directory(logd_server, tmp_path: Path) -> None:
    """The writer another logd process: MSGs to it reach a tail on the replica, in order."""
    primary = logd_server("--fsync", "never", "--partition-size", "2048")
    replica = logd_server("--refuse", data_dir=primary.data_dir)
    tail = Wire(replica.host, replica.port)
    tail.cmd("READ", 1, 0)
    assert tail.read_until(b"OK\r\n") == b"OK\r\n"
    with logd.connect(primary.addr) as writer:
        for n in range(1, 301):
            assert list(writer.append(b"p%d" % n)) == [n]
    want = b"".join(encode(n, b"p%d" % n) for n in range(1, 301))
    assert tail.read_exact(len(want)) == want  # across several of the primary's rolls
    tail.sock.close()
    with logd.connect(replica.addr) as client:
        st = client.stats()
        assert (st["head"], st["role"]) == (300, "replica") and st["partitions"] > 3
        assert st["writer"].startswith(f"pid {primary.proc.pid} (logd serve")
