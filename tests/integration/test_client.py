"""The client library against real ``python -m logd serve`` processes.

Every wait has a deadline and every loop a bound. Servers come from the
``logd_server`` factory fixture (tests/integration/conftest.py).
"""

from __future__ import annotations

import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import logd
from logd import errors
from logd.client import Client, Connection
from logd.record import Record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def free_port_address() -> str:
    """An address where nothing listens (bound then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths must fit in 108 bytes; pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="logd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Collector:
    """Runs an iterator in a thread; the test waits on its queue with deadlines."""

    def __init__(self, it: Iterator[Any]) -> None:
        self.items: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self._it = it
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for item in self._it:
                self.items.put(item)
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.items.put(exc)

    def take(self, n: int, timeout: float = 15.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        got: list[Any] = []
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(got)} of {n} items in {timeout}s: {got[-3:]}")
            try:
                item = self.items.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise AssertionError(f"iterator failed after {len(got)} items") from item
            got.append(item)
        return got


# -- round trips --------------------------------------------------------------------


def test_binary_round_trip(logd_server: Any) -> None:
    srv = logd_server()
    bodies = [bytes([b]) for b in range(256)]  # every byte value alone
    bodies += [
        bytes(range(256)),
        bytes(range(255, -1, -1)) * 7,
        b"\r\n",
        b"line one\r\nline two\r\n",
        b"+EOF\r\n",
        b"OK 5\r\nERR x\r\n",
        b"\x00" * 1000,
        os.urandom(200_000),
    ]
    with logd.connect(srv.addr, timeout=10) as c:
        assert c.head() == 0
        ids = c.append(*bodies)
        assert ids == range(1, len(bodies) + 1)
        assert c.head() == len(bodies)
        got = [(r.id, r.body) for r in c.read(1, len(bodies))]
        assert got == list(zip(ids, bodies))
        # From the middle, and from 0 (= first retained).
        assert [r.body for r in c.read(257, 3)] == bodies[256:259]
        first = next(iter(c.read(0, 1)))
        assert (first.id, first.body) == (1, bodies[0])
        # Single appends continue the sequence.
        assert c.append(b"\r\nlast\r\n") == range(len(bodies) + 1, len(bodies) + 2)


def test_unix_socket_and_ping(logd_server: Any, short_tmp: Path) -> None:
    sock_path = short_tmp / "logd.sock"
    srv = logd_server("--unix", str(sock_path))
    with logd.connect(str(sock_path)) as c:
        assert c.ping() < 5
        assert c.append(b"via unix") == range(1, 2)
    with logd.connect(srv.addr) as c:
        assert list(c.read(1, 1)) == [Record(1, b"via unix")]


def test_pipeline_and_append_many(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        results = c.pipeline().append(b"a", b"b").head().ping().append(b"c").stats().execute()
        assert results[:2] == [range(1, 3), 2] and results[3] == range(3, 4)
        assert type(results[2]) is type(c.ping()) is float  # the round trip, either way
        assert results[4]["head"] == 3
        ranges = c.append_many([[b"x%d" % i for i in range(10)] for _ in range(100)], window=8)
        assert ranges == [range(4 + 10 * i, 14 + 10 * i) for i in range(100)]
        assert c.head() == 1003


def test_pipeline_error_keeps_connection(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        results = c.pipeline().append(b"a").append(b"").append(b"b").execute(raise_on_error=False)
        assert results[0] == range(1, 2)
        assert isinstance(results[1], errors.InvalidArgument)
        assert results[2] == range(2, 3)  # nothing was written for the empty one
        assert c.head() == 2


def test_msgpack_codec(logd_server: Any) -> None:
    srv = logd_server()
    objs = [{"user": "ada", "n": 1}, {"user": "bob", "tags": ["x", "y"], "raw": b"\x00\xff"}]
    with logd.connect(srv.addr) as c:
        assert c.append_obj(*objs) == range(1, 3)
        assert [r.obj for r in c.read(1, 2, decode=True)] == objs
        assert [r.body for r in c.read(1, 2)] == [logd.client.pack(o) for o in objs]


def test_stats_dict(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        c.append(b"one", b"two")
        stats = c.stats()
        assert isinstance(stats, dict)
        assert stats["head"] == 2
        assert "head" in c.stats_text()


def test_errors(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        c.append(b"a", b"b")
        with pytest.raises(errors.OutOfRange) as info:
            list(c.read(10, 1))
        assert info.value.head == 2
        with pytest.raises(errors.InvalidArgument):
            c.append(b"ok", b"")  # empty body: nothing written
        assert c.head() == 2  # connection still usable
    with pytest.raises(errors.ConnectionLost):
        logd.connect(free_port_address(), connect_timeout=2)


def test_read_timeout_is_connection_lost(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr, timeout=0.3) as c:
        c.append(b"only one")
        t0 = time.monotonic()
        got = []
        with pytest.raises(errors.ConnectionLost):
            for rec in c.read(1, 2):  # record 2 never comes
                got.append(rec.id)
        assert got == [1]
        assert time.monotonic() - t0 < 5
        assert c.head() == 1  # reconnects on the next call


def test_abandoned_read_reconnects(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        c.append(*[b"m%d" % i for i in range(1000)])
        for rec in c.read(1, 1000):
            break
        assert c.head() == 1000
        for rec in c.follow(990):
            if rec.id == 995:
                break
        assert c.ping() < 5


# -- follow -------------------------------------------------------------------------


def test_follow_receives_writes_from_another_client(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as writer:
        writer.append(b"before-1", b"before-2")
        follower = logd.connect(srv.addr)
        col = Collector(follower.follow(1, idle_timeout=30))
        assert [r.body for r in col.take(2)] == [b"before-1", b"before-2"]
        for i in range(50):
            writer.append(b"live-%d" % i)
        got = col.take(50)
        assert [r.id for r in got] == list(range(3, 53))
        assert [r.body for r in got] == [b"live-%d" % i for i in range(50)]
        writer.append_many([[b"batch"] * 100] * 5)
        assert [r.id for r in col.take(500)] == list(range(53, 553))
        follower.close()  # ends the follow in its thread
        col.thread.join(10)
        assert not col.thread.is_alive()


def test_follow_from_now_on(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as writer:
        writer.append(b"old")
        follower = logd.connect(srv.addr)
        col = Collector(follower.follow(writer.head() + 1))
        writer.append(b"new")
        assert col.take(1) == [Record(2, b"new")]
        follower.close()


def test_follow_reconnects_across_restart(logd_server: Any, short_tmp: Path) -> None:
    # A unix socket keeps the address stable across the restart.
    sock_path = str(short_tmp / "logd.sock")
    srv = logd_server("--unix", sock_path)
    reconnects: list[int] = []
    with logd.connect(sock_path) as writer:
        writer.append(*[b"first-%d" % i for i in range(10)])
    follower = Client(sock_path, timeout=5)
    col = Collector(
        follower.follow(
            1,
            reconnect=True,
            backoff_base=0.02,
            backoff_cap=0.5,
            on_reconnect=lambda n, exc: reconnects.append(n),
        )
    )
    assert [r.id for r in col.take(10)] == list(range(1, 11))
    srv.restart()
    with logd.connect(sock_path) as writer:
        writer.append(*[b"second-%d" % i for i in range(10)])
    got = col.take(10, timeout=30)
    assert [r.id for r in got] == list(range(11, 21))
    assert [r.body for r in got] == [b"second-%d" % i for i in range(10)]
    assert reconnects, "the follow should have reconnected"
    srv.kill()  # and once more, without a graceful shutdown
    srv.restart()
    with logd.connect(sock_path) as writer:
        writer.append(b"third")
    assert col.take(1, timeout=30) == [Record(21, b"third")]
    assert col.items.empty()  # no duplicates were yielded
    follower.close()


# -- corruption ---------------------------------------------------------------------


def flip_byte(data_dir: Path, marker: bytes, offset: int) -> None:
    """Flip one bit in place (same inode), in the one partition file holding ``marker``."""
    found = 0
    for part in sorted(data_dir.glob("*.log")):
        with open(part, "r+b") as f:
            data = f.read()
            at = data.find(marker)
            if at >= 0:
                f.seek(at + offset)
                f.write(bytes([data[at + offset] ^ 0x01]))
                found += 1
    assert found == 1


def test_corrupted_record_raises_checksum_error(logd_server: Any, tmp_path: Path) -> None:
    # The server verifies partitions when it starts, so the bytes are
    # flipped in the copy after the server on it has started (bit rot under
    # a running server): it sends them as stored, and only the client's
    # check stands between them and the application.
    srv = logd_server()
    total = 400
    with logd.connect(srv.addr) as c:
        c.append_many([[b"record-%04d" % (i + j) for j in range(50)] for i in range(1, total, 50)])
        assert c.head() == total
    assert srv.stop() == 0
    copy = tmp_path / "corrupt-copy"
    shutil.copytree(srv.data_dir, copy)
    bad = logd_server(data_dir=copy)
    flip_byte(copy, b"record-0020", 7)  # '0' -> '1' in the body; header and length intact
    with logd.connect(bad.addr) as c:
        got = []
        with pytest.raises(errors.ChecksumError):
            for rec in c.read(1, total):
                got.append(rec.id)
        assert got == list(range(1, 20))  # nothing at or after the bad record
        assert c.head() == total  # the next call reconnects
        with pytest.raises(errors.ChecksumError):
            list(c.read(20, 1))
        assert [r.id for r in c.read(21, 5)] == list(range(21, 26))  # around it is fine
    # The original is untouched.
    good = logd_server(data_dir=srv.data_dir)
    with logd.connect(good.addr) as c:
        assert [r.body for r in c.read(1, total)] == [b"record-%04d" % i for i in range(1, total + 1)]


# -- a checkpointed consumer, killed at random ------------------------------------------

CONSUMER = textwrap.dedent(
    """
    import os, sys, time
    import logd

    addr, cursor, out, last, every = sys.argv[1:6]
    last, every = int(last), int(every)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with logd.Checkpoint(cursor, every=every, interval=0.05) as cp, logd.connect(addr) as c:
        start = cp.next_id(default=1)
        os.write(fd, b"start %d\\n" % start)
        if start <= last:
            for rec in c.read(start, last - start + 1):
                os.write(fd, b"%d\\n" % rec.id)  # the "processing", unbuffered
                time.sleep(0.0005)  # simulated work, so kills land mid-stream
                cp.save(rec.id)
    """
)


def test_checkpointed_consumer_survives_sigkill(logd_server: Any, tmp_path: Path) -> None:
    srv = logd_server()
    total = 2000
    with logd.connect(srv.addr) as c:
        c.append_many([[b"event-%d" % (i * 100 + j) for j in range(100)] for i in range(total // 100)])
        assert c.head() == total
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    cursor, out = tmp_path / "cursor", tmp_path / "processed"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    kills = 0
    finished = False
    for _round in range(60):  # bounded; normally finishes far sooner
        every = rng.choice([1, 3, 17, 100])
        proc = subprocess.Popen(
            [sys.executable, str(script), srv.addr, str(cursor), str(out), str(total), str(every)],
            env=env,
        )
        # Kill at a random point of the run, counted from its "start" line: under
        # load the interpreter can take longer to start than any fixed delay.
        started = _round + 1
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"start ") >= started:
                break
            time.sleep(0.01)
        try:
            rc = proc.wait(timeout=rng.uniform(0.05, 0.4))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            kills += 1
            continue
        assert rc == 0
        finished = True
        break
    if not finished:  # let the last run complete, with a deadline
        proc = subprocess.Popen(
            [sys.executable, str(script), srv.addr, str(cursor), str(out), str(total), "10"], env=env
        )
        assert proc.wait(timeout=60) == 0
    assert kills >= 2, "the consumer finished before it could be killed; slow it down"

    processed: set[int] = set()
    highest = 0
    runs = 0
    expected_next: int | None = None
    for line in out.read_text().splitlines():
        if line.startswith("start "):
            start = int(line.split()[1])
            # A run starts at or before the first unprocessed id: nothing skipped.
            assert start <= highest + 1, f"run started at {start} after processing {highest}"
            expected_next = start
            runs += 1
            continue
        rec_id = int(line)
        assert rec_id == expected_next, f"expected {expected_next}, got {rec_id}"
        expected_next = rec_id + 1
        processed.add(rec_id)
        highest = max(highest, rec_id)
    assert processed == set(range(1, total + 1))
    assert runs >= kills


GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import sys, gevent, logd
    addr = sys.argv[1]
    got = []
    def follower():
        c = logd.connect(addr)
        for rec in c.follow(1):
            got.append(rec.id)
            if len(got) == 300:
                c.close()
    def writer():
        with logd.connect(addr) as c:
            for i in range(300):
                c.append(b"g%d" % i)
    gevent.joinall([gevent.spawn(follower), gevent.spawn(writer)], timeout=30, raise_error=True)
    assert got == list(range(1, 301)), got[-5:]
    print("ok")
    """
)


def test_under_gevent(logd_server: Any, tmp_path: Path) -> None:
    # A follow and a writer as greenlets in one monkey-patched process.
    srv = logd_server()
    script = tmp_path / "gevent_client.py"
    script.write_text(GEVENT_SCRIPT)
    r = subprocess.run(
        [sys.executable, str(script), srv.addr],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert (r.returncode, r.stdout) == (0, b"ok\n"), r.stderr


# -- a consumer started before its server (issue 7, item 11) ---------------------------------


class CountingConnection(Connection):
    """A real connection that counts its attempts, so a test can wait for them."""

    attempts = 0

    def dial(self) -> Any:
        self.attempts += 1
        return super().dial()


class CountingClient(Client):
    connection_class = CountingConnection

    @property
    def attempts(self) -> int:
        return self.connection.attempts  # type: ignore[attr-defined, no-any-return]


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_connect_waits_for_a_server_started_later(logd_server: Any) -> None:
    addr = free_port_address()  # picked in advance; the server binds it later
    client = CountingClient(addr, wait=30)
    result: queue.Queue[Any] = queue.Queue()

    def consumer() -> None:
        try:
            client.connect()
            with client:
                result.put([r.body for r in client.read(1, 3, timeout=30)])
        except BaseException as exc:  # reported to the test thread
            result.put(exc)

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    wait_until(lambda: client.attempts >= 3)  # refused, and still trying
    assert result.empty() and not client.connected
    srv = logd_server("--port", addr.rsplit(":", 1)[1])
    assert srv.addr == addr
    with logd.connect(addr) as w:
        w.append(b"one", b"two", b"three")
    got = result.get(timeout=30)
    assert got == [b"one", b"two", b"three"], got
    t.join(10)


def test_follow_reconnect_on_a_client_that_never_connected(logd_server: Any) -> None:
    addr = free_port_address()
    follower = Client(addr, timeout=5)
    attempts: list[int] = []
    col = Collector(
        follower.follow(1, reconnect=True, backoff_cap=0.2, on_reconnect=lambda n, exc: attempts.append(n))
    )
    wait_until(lambda: len(attempts) >= 3)  # refused a few times first
    assert col.items.empty()
    logd_server("--port", addr.rsplit(":", 1)[1])
    with logd.connect(addr) as w:
        w.append(b"late", b"but there")
    assert [r.body for r in col.take(2)] == [b"late", b"but there"]
    follower.close()
    col.thread.join(10)
    assert not col.thread.is_alive()


def test_connect_wait_gives_up(logd_server: Any) -> None:
    t0 = time.monotonic()
    with pytest.raises(errors.ConnectionLost) as info:
        logd.connect(free_port_address(), wait=0.5, connect_timeout=1)
    assert 0.5 <= time.monotonic() - t0 < 5
    assert "attempts in 0.5 s" in info.value.message


# -- SHUTDOWN (issue 7, item 18) --------------------------------------------------------------


def test_client_shutdown_stops_the_server(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        c.append(b"kept")
        c.shutdown()
        assert not c.connected
    assert srv.proc is not None and srv.proc.wait(20) == 0
    assert srv.events("shutdown_complete")
    again = logd_server(data_dir=srv.data_dir)  # nothing acknowledged was lost
    with logd.connect(again.addr) as c:
        assert list(c.read(1, 1)) == [Record(1, b"kept")]


def test_logd_shutdown_command(logd_server: Any) -> None:
    srv = logd_server()
    r = subprocess.run(
        [sys.executable, "-m", "logd", "shutdown", "-H", srv.addr],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert (r.returncode, r.stderr) == (0, b"")
    assert srv.proc is not None and srv.proc.wait(20) == 0
    r = subprocess.run(  # nothing listens now: a connection failure
        [sys.executable, "-m", "logd", "shutdown", "-H", srv.addr, "--timeout", "2"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 3 and r.stderr.count(b"\n") == 1, r.stderr


# -- a long error line ends a stream with its own class (issue 7, item 9) ----------------------


def test_corrupt_record_mid_log_is_corrupt_log_error(logd_server: Any) -> None:
    # With --allow-corrupt the server serves up to a bad record, then ends the
    # stream with "ERR CORRUPT record 20 in partition ... fails its checks", a
    # line longer than a record header may be.
    srv = logd_server()
    total = 100
    with logd.connect(srv.addr) as c:
        c.append(*[b"record-%04d" % i for i in range(1, total + 1)])
    assert srv.stop() == 0
    flip_byte(srv.data_dir, b"record-0020", 7)
    # After a clean stop only `full` reads every record at start (item 10).
    bad = logd_server("--allow-corrupt", "--verify-on-start", "full", data_dir=srv.data_dir)
    with logd.connect(bad.addr) as c:
        got = []
        with pytest.raises(errors.CorruptLogError) as info:
            for rec in c.read(1, total):
                got.append(rec.id)
        assert got == list(range(1, 20))
        assert "record 20" in info.value.message and len(info.value.reason()) > 64
    r = subprocess.run(
        [sys.executable, "-m", "logd", "read", "-H", bad.addr, "-o", "raw"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 1
    assert r.stdout.splitlines() == [b"record-%04d" % i for i in range(1, 20)]
    assert r.stderr.startswith(b"logd read: CORRUPT: record 20") and r.stderr.count(b"\n") == 1, r.stderr


# -- addresses on the command line (issue 7, items 15 and 17) ----------------------------------


def test_cli_bare_port_is_refused_and_colon_port_is_local(logd_server: Any) -> None:
    srv = logd_server()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LOGD_HOST", None)
    port = str(srv.port)
    for args, extra in ((["-H", port], {}), ([], {"LOGD_HOST": port})):
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "logd", "head", *args],
            capture_output=True, timeout=60, env={**env, **extra},
        )
        assert r.returncode == 2, r.stderr  # usage, and nothing was dialled
        assert r.stderr.count(b"\n") == 1 and f"':{port}' for 127.0.0.1:{port}".encode() in r.stderr
        assert time.monotonic() - t0 < 10
    r = subprocess.run(
        [sys.executable, "-m", "logd", "head", "-H", f":{port}"], capture_output=True, timeout=60, env=env
    )
    assert (r.returncode, r.stdout) == (0, b"0\n"), r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "logd", "head", "-H", "localhost:abc"], capture_output=True, timeout=60, env=env
    )
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1 and b"Traceback" not in r.stderr
