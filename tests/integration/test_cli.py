"""The ``logd`` client subcommands, run as ``python -m logd ...`` against real servers.

Exit codes under test: 0 ok, 1 error reply or bad record, 2 usage,
3 connection failure, 4 not retained, 143 SIGTERM.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import logd

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
ENV.pop("LOGD_HOST", None)


def logd_cli(
    *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "logd", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env or ENV,
        cwd=REPO,
    )


def dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def lines(out: bytes) -> list[str]:
    return out.decode().splitlines()


def json_lines(out: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


class LineReader:
    """Reads a process's stdout lines in a thread, so waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: queue.Queue[bytes] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=self._pump, args=(stdout,), daemon=True).start()

    def _pump(self, stdout: Any) -> None:
        for line in stdout:
            self.lines.put(line)

    def take(self, n: int, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        got: list[bytes] = []
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(got)} of {n} lines: {got[-3:]}")
            try:
                got.append(self.lines.get(timeout=left))
            except queue.Empty:
                pass
        return got


@pytest.fixture
def server(logd_server: Any) -> Any:
    return logd_server()


@pytest.fixture
def retained_from_7(logd_server: Any) -> Iterator[Any]:
    """A server whose oldest partition (ids 1-6) is gone, as retention would leave it."""
    flags = ("--partition-size", "200")
    srv = logd_server(*flags)
    with logd.connect(srv.addr) as c:
        for i in range(1, 41):  # one at a time: a batch never straddles partitions
            c.append(b"record-%04d" % i)
    assert srv.stop() == 0
    for f in srv.data_dir.glob("0000000001-*"):
        f.unlink()
    srv.start()
    with logd.connect(srv.addr) as c:
        assert next(iter(c.read(0, 1))).id == 7
    yield srv


# -- ping, head, stats -----------------------------------------------------------------


def test_ping(server: Any) -> None:
    r = logd_cli("ping", "-H", server.addr)
    assert (r.returncode, r.stdout) == (0, b"PONG\n")


def test_host_from_environment(server: Any) -> None:
    r = logd_cli("ping", env={**ENV, "LOGD_HOST": server.addr})
    assert r.returncode == 0
    r = logd_cli("head", env={**ENV, "LOGD_HOST": server.addr})
    assert (r.returncode, r.stdout) == (0, b"0\n")


@pytest.mark.parametrize(
    "args", [["ping"], ["head"], ["stats"], ["read"], ["read", "-f"], ["write", "x"]]
)
def test_connection_failure_exits_3(args: list[str]) -> None:
    r = logd_cli(*args, "-H", dead_address(), "--timeout", "2", input=b"")
    assert r.returncode == 3, r.stderr
    assert b"cannot connect" in r.stderr
    assert r.stdout == b""


def test_head(server: Any) -> None:
    assert logd_cli("head", "-H", server.addr).stdout == b"0\n"
    logd_cli("write", "-H", server.addr, "a", "b")
    r = logd_cli("head", "-H", server.addr)
    assert (r.returncode, r.stdout) == (0, b"2\n")


def test_stats(server: Any) -> None:
    logd_cli("write", "-H", server.addr, "one")
    r = logd_cli("stats", "-H", server.addr)  # piped: JSON by default
    assert r.returncode == 0
    stats = json.loads(r.stdout)
    assert stats["head"] == 1
    r = logd_cli("stats", "-H", server.addr, "-o", "text")
    assert r.returncode == 0
    assert any(line.split() == ["head:", "1"] for line in lines(r.stdout))
    r = logd_cli("stats", "-H", server.addr, "-o", "json")
    again = json.loads(r.stdout)
    assert again["head"] == 1 and set(stats) <= set(again)


# -- write ----------------------------------------------------------------------------


def test_write_arguments(server: Any) -> None:
    r = logd_cli("write", "-H", server.addr, "hello", "two words", "ü")
    assert (r.returncode, lines(r.stdout)) == (0, ["1", "2", "3"])
    with logd.connect(server.addr) as c:
        assert [x.body for x in c.read(1, 3)] == [b"hello", b"two words", "ü".encode()]


def test_write_quiet(server: Any) -> None:
    r = logd_cli("write", "-q", "-H", server.addr, "x")
    assert (r.returncode, r.stdout) == (0, b"")


def test_write_empty_argument_is_usage_error(server: Any) -> None:
    r = logd_cli("write", "-H", server.addr, "ok", "")
    assert r.returncode == 2
    assert logd_cli("head", "-H", server.addr).stdout == b"0\n"  # nothing written


def test_write_too_large_is_error_reply(logd_server: Any) -> None:
    srv = logd_server("--max-message", "1000")
    r = logd_cli("write", "-H", srv.addr, "x" * 2000)
    assert r.returncode == 1, r.stderr


def test_write_stdin_lines(server: Any) -> None:
    data = b"first\nsecond\r\n\nfourth has \ttabs\nno newline at end"
    r = logd_cli("write", "-H", server.addr, input=data)
    assert r.returncode == 0
    assert lines(r.stdout) == ["1", "2", "3", "4"]
    assert b"skipped 1 empty line" in r.stderr
    with logd.connect(server.addr) as c:
        bodies = [x.body for x in c.read(1, 4)]
    assert bodies == [b"first", b"second", b"fourth has \ttabs", b"no newline at end"]


def test_write_from_pipe_of_100k_lines(server: Any) -> None:
    n = 100_000
    data = b"".join(b"line %d of the pipe\n" % i for i in range(n))
    t0 = time.monotonic()
    # A real pipe from another process, as in `producer | logd write`.
    producer = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    writer = subprocess.Popen(
        [sys.executable, "-m", "logd", "write", "-H", server.addr],
        stdin=producer.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    )
    assert producer.stdout is not None
    producer.stdout.close()  # the writer holds the read end now
    threading.Thread(target=lambda: (producer.stdin.write(data), producer.stdin.close()), daemon=True).start()  # type: ignore[union-attr]
    out, err = writer.communicate(timeout=60)
    assert producer.wait(10) == 0
    elapsed = time.monotonic() - t0
    assert writer.returncode == 0, err
    ids = out.split()
    assert len(ids) == n and ids[0] == b"1" and ids[-1] == b"%d" % n
    assert elapsed < 30, f"100k lines took {elapsed:.1f}s"
    r = logd_cli("read", "-H", server.addr, "-o", "raw")
    assert r.returncode == 0
    assert r.stdout == data


# -- read -----------------------------------------------------------------------------


@pytest.fixture
def five(server: Any) -> Any:
    with logd.connect(server.addr) as c:
        c.append(b"alpha", b"beta", b"line\r\nbreak", b"\xff\xfe binary", b"omega")
    return server


def test_read_formats(five: Any) -> None:
    r = logd_cli("read", "-H", five.addr)  # piped: JSON lines by default
    assert r.returncode == 0
    assert json_lines(r.stdout) == [
        {"id": 1, "body": "alpha"},
        {"id": 2, "body": "beta"},
        {"id": 3, "body": "line\r\nbreak"},
        {"id": 4, "body_base64": "//4gYmluYXJ5"},
        {"id": 5, "body": "omega"},
    ]
    r = logd_cli("read", "-H", five.addr, "-o", "raw")
    assert r.stdout == b"alpha\nbeta\nline\r\nbreak\n\xff\xfe binary\nomega\n"
    r = logd_cli("read", "-H", five.addr, "-o", "text")
    assert lines(r.stdout) == [
        "1\talpha",
        "2\tbeta",
        "3\tline\\r\\nbreak",
        "4\t\\xff\\xfe binary",
        "5\tomega",
    ]


@pytest.mark.parametrize(
    "args, ids",
    [
        ([], [1, 2, 3, 4, 5]),
        (["--from", "begin"], [1, 2, 3, 4, 5]),
        (["--from", "3"], [3, 4, 5]),
        (["--from", "-2"], [4, 5]),
        (["--from", "-50"], [1, 2, 3, 4, 5]),
        (["--from", "end"], []),
        (["--from", "6"], []),  # head + 1: nothing yet
        (["-n", "2"], [1, 2]),
        (["--from", "2", "-n", "2"], [2, 3]),
        (["--from", "4", "-n", "10"], [4, 5]),  # without -f, stops at the head
        (["-n", "0"], []),
    ],
)
def test_read_from_and_count(five: Any, args: list[str], ids: list[int]) -> None:
    r = logd_cli("read", "-H", five.addr, *args)
    assert r.returncode == 0, r.stderr
    assert [x["id"] for x in json_lines(r.stdout)] == ids


def test_read_past_head_is_error_reply(five: Any) -> None:
    r = logd_cli("read", "-H", five.addr, "--from", "7")
    assert r.returncode == 1
    assert b"head" in r.stderr


@pytest.mark.parametrize(
    "args",
    [["--from", "bogus"], ["--from", "0"], ["-o", "xml"], ["-n", "-1"], ["-n", "x"], ["--timeout", "0"]],
)
def test_read_usage_errors(server: Any, args: list[str]) -> None:
    r = logd_cli("read", "-H", server.addr, *args)
    assert r.returncode == 2, r.stderr


def test_usage_errors() -> None:
    assert logd_cli().returncode == 2
    assert logd_cli("ping", "--no-such-flag").returncode == 2
    assert logd_cli("ping", "-H", "host:notaport").returncode == 2


def test_read_not_retained_exits_4(retained_from_7: Any) -> None:
    addr = retained_from_7.addr
    r = logd_cli("read", "-H", addr, "--from", "3")
    assert r.returncode == 4
    assert b"first retained id is 7" in r.stderr
    # begin and -N start at the first retained id instead.
    r = logd_cli("read", "-H", addr, "--from", "begin", "-n", "2")
    assert [x["id"] for x in json_lines(r.stdout)] == [7, 8]
    r = logd_cli("read", "-H", addr, "--from", "-100")
    assert r.returncode == 0
    assert [x["id"] for x in json_lines(r.stdout)] == list(range(7, 41))


def test_read_not_retained_cursor_exits_4(retained_from_7: Any, tmp_path: Path) -> None:
    cursor = tmp_path / "cursor"
    cursor.write_text("2\n")  # a consumer that fell behind retention
    r = logd_cli("read", "-H", retained_from_7.addr, "--cursor-file", str(cursor))
    assert r.returncode == 4
    assert cursor.read_text() == "2\n"  # a gap is never skipped silently


def test_read_cursor_file(five: Any, tmp_path: Path) -> None:
    cursor = tmp_path / "cursor"
    args = ("read", "-H", five.addr, "--cursor-file", str(cursor), "-o", "raw")
    r = logd_cli(*args, "-n", "2")
    assert (r.returncode, r.stdout) == (0, b"alpha\nbeta\n")
    assert cursor.read_text() == "2\n"
    r = logd_cli(*args, "--from", "1")  # the cursor wins over --from
    assert r.stdout == b"line\r\nbreak\n\xff\xfe binary\nomega\n"
    assert cursor.read_text() == "5\n"
    r = logd_cli(*args)
    assert (r.returncode, r.stdout) == (0, b"")
    with logd.connect(five.addr) as c:
        c.append(b"six", b"seven")
    r = logd_cli(*args)
    assert r.stdout == b"six\nseven\n"
    assert cursor.read_text() == "7\n"


def test_read_corrupt_cursor_file_is_usage_error(five: Any, tmp_path: Path) -> None:
    cursor = tmp_path / "cursor"
    cursor.write_text("not an id")
    r = logd_cli("read", "-H", five.addr, "--cursor-file", str(cursor))
    assert r.returncode == 2


def spawn_logd(*args: str) -> subprocess.Popen[bytes]:
    """``logd ARGS`` in the background, its stdout and stderr piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "logd", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=REPO,
    )


def test_read_follow(five: Any) -> None:
    proc = spawn_logd("read", "-H", five.addr, "-f", "--from", "4", "-n", "4")
    try:
        reader = LineReader(proc)
        assert [json.loads(x)["id"] for x in reader.take(2)] == [4, 5]
        with logd.connect(five.addr) as c:
            c.append(b"live-6")
            c.append(b"live-7", b"live-8")
        got = [json.loads(x) for x in reader.take(2)]
        assert got == [{"id": 6, "body": "live-6"}, {"id": 7, "body": "live-7"}]
        assert proc.wait(timeout=20) == 0  # -n 4 reached
    finally:
        proc.kill()
        proc.wait(10)


def test_read_follow_sigterm_saves_cursor(five: Any, tmp_path: Path) -> None:
    cursor = tmp_path / "cursor"
    proc = spawn_logd("read", "-H", five.addr, "-f", "--cursor-file", str(cursor))
    try:
        reader = LineReader(proc)
        assert len(reader.take(5)) == 5
        with logd.connect(five.addr) as c:
            c.append(b"six")
        assert json.loads(reader.take(1)[0])["id"] == 6
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            diag = subprocess.run(["py-spy", "dump", "--pid", str(proc.pid)], capture_output=True)
            raise AssertionError(f"no exit on SIGTERM: {diag.stdout!r} {diag.stderr!r}")
        assert code == 143
        assert cursor.read_text() == "6\n"
    finally:
        proc.kill()
        proc.wait(10)
    r = logd_cli("read", "-H", five.addr, "--cursor-file", str(cursor))
    assert (r.returncode, r.stdout) == (0, b"")


def test_read_follow_shutdown_exits_3(logd_server: Any) -> None:
    srv = logd_server()
    proc = spawn_logd("read", "-H", srv.addr, "-f")
    try:
        with logd.connect(srv.addr) as c:
            c.append(b"one")
        LineReader(proc).take(1)
        assert srv.stop() == 0
        assert proc.wait(timeout=20) == 3
    finally:
        proc.kill()
        proc.wait(10)


def test_read_into_closed_pipe(five: Any) -> None:
    with logd.connect(five.addr) as c:
        c.append_many([[b"filler %d" % i for i in range(1000)]] * 50)
    # `logd read | head -1`: EPIPE ends the read quietly.
    p = subprocess.run(
        f"{sys.executable} -m logd read -H {five.addr} -o raw | head -1",
        shell=True,
        capture_output=True,
        timeout=60,
        env=ENV,
        cwd=REPO,
    )
    assert p.stdout == b"alpha\n"
    assert b"Traceback" not in p.stderr and b"Error" not in p.stderr


def test_read_bad_record_exits_1(server: Any) -> None:
    with logd.connect(server.addr) as c:
        c.append(*[b"rec-%02d" % i for i in range(1, 11)])
    # Flip a body bit in place under the running server (it checks files at startup only).
    (part,) = [p for p in server.data_dir.glob("*.log") if b"rec-05" in p.read_bytes()]
    with open(part, "r+b") as f:
        data = f.read()
        at = data.find(b"rec-05")
        f.seek(at)
        f.write(b"R")
    r = logd_cli("read", "-H", server.addr, "-o", "raw")
    assert r.returncode == 1
    assert r.stdout == b"rec-01\nrec-02\nrec-03\nrec-04\n"  # everything before it, nothing after
    assert b"CHECKSUM" in r.stderr
