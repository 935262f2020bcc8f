"""``logd write`` on a live stream and ``logd read`` into pipes and consumers (issue 7).

Items: 1 (live write, signals, summary), 2 (the cursor and a pipe, --exec),
11 (--wait for a server not up yet), 17 (cursor file paths), 18 (global
options, --version, read -f near the end, --batch-bytes sizes, messages).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import logd
from tests.integration.test_cli import ENV, REPO, LineReader, dead_address, json_lines, logd_cli

pytestmark = pytest.mark.integration

LOGD = f"{sys.executable} -m logd"


def spawn(*args: str, stdin: Any = subprocess.PIPE, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "logd", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or ENV,
        cwd=REPO,
    )


def unread(fd: int) -> int:
    """Bytes written into a pipe that its reader has not taken yet (Linux FIONREAD)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, sys.byteorder)


def wait_drained(fd: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while unread(fd):
        if time.monotonic() > deadline:
            raise AssertionError(f"{unread(fd)} bytes still unread in the pipe")
        time.sleep(0.01)


def summary(stderr: bytes) -> dict[str, int]:
    """The numbers of write's closing summary line."""
    line = [x for x in stderr.decode().splitlines() if x.startswith("logd write: read ")][-1]
    m = re.match(r"logd write: read (\d+) lines?, wrote (\d+), last id (\d+|-)", line)
    assert m, line
    return {"read": int(m[1]), "written": int(m[2]), "last": 0 if m[3] == "-" else int(m[3])}


def head(addr: str) -> int:
    with logd.connect(addr) as c:
        return c.head()


# -- item 1: write ships a live stream --------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--batch", "1"], ["--linger", "0"]])
def test_write_ships_each_line_while_stdin_stays_open(logd_server: Any, flags: list[str]) -> None:
    srv = logd_server()
    proc = spawn("write", "-H", srv.addr, *flags)
    assert proc.stdin is not None
    try:
        ids = LineReader(proc)
        with logd.connect(srv.addr) as c:
            for i in range(1, 6):
                proc.stdin.write(b"live line %d\n" % i)
                proc.stdin.flush()
                # READ waits for a record not written yet: a deadline, not a sleep.
                rec = next(iter(c.read(i, 1, timeout=10)))
                assert (rec.id, rec.body) == (i, b"live line %d" % i)
                assert ids.take(1) == [b"%d\n" % i]
        proc.stdin.close()
        assert proc.wait(20) == 0
        assert proc.stderr is not None
        assert summary(proc.stderr.read()) == {"read": 5, "written": 5, "last": 5}
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_write_signal_flushes_lines_read_but_not_sent(logd_server: Any, sig: int, code: int) -> None:
    srv = logd_server()
    # A linger of a minute: what the signal finds buffered was read, not sent.
    proc = spawn("write", "-H", srv.addr, "--linger", "60000")
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"one\ntwo\nthree\n")
        proc.stdin.flush()
        wait_drained(proc.stdin.fileno())
        assert head(srv.addr) == 0
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == code, err
    assert out == b"1\n2\n3\n"
    assert summary(err) == {"read": 3, "written": 3, "last": 3}
    assert head(srv.addr) == 3


def test_write_ctrl_c_in_a_big_write_prints_what_was_written(logd_server: Any) -> None:
    srv = logd_server()
    proc = spawn("write", "-H", srv.addr)
    assert proc.stdin is not None
    stdin = proc.stdin

    def feed() -> None:
        try:
            for i in range(2_000_000):
                stdin.write(b"bulk line %d\n" % i)
        except (BrokenPipeError, ValueError, OSError):
            pass

    threading.Thread(target=feed, daemon=True).start()
    try:
        reader = LineReader(proc)
        reader.take(2000, timeout=30)  # well into the write
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        rest = []
        while not reader.lines.empty():
            rest.append(reader.lines.get())
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.stderr is not None
    err = proc.stderr.read()
    got = summary(err)
    assert b"Traceback" not in err
    # Everything acked was printed, in order, and the server holds exactly that.
    assert got["written"] == got["last"] == head(srv.addr)
    assert got["read"] >= got["written"] > 2000
    assert b"in flight" not in err  # all of it was acknowledged before exiting


def test_write_batch_bytes_takes_sizes(logd_server: Any) -> None:
    srv = logd_server()
    r = logd_cli("write", "-H", srv.addr, "--batch-bytes", "1MiB", input=b"a\nb\n")
    assert (r.returncode, r.stdout) == (0, b"1\n2\n"), r.stderr
    r = logd_cli("write", "-H", srv.addr, "--batch-bytes", "lots", input=b"a\n")
    assert r.returncode == 2 and b"Traceback" not in r.stderr


# -- item 2: the cursor and a pipe consumer ---------------------------------------------


@pytest.fixture
def big(logd_server: Any) -> Any:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        c.append_many([[b"record %06d" % (i * 1000 + j) for j in range(1, 1001)] for i in range(50)])
    return srv


def pipeline(cmd: str) -> tuple[bytes, bytes, list[int]]:
    """Run a bash pipeline; return its stdout, stderr and every command's exit status."""
    p = subprocess.run(
        ["bash", "-c", cmd + '; echo "${PIPESTATUS[@]}" >&2'],
        capture_output=True, timeout=60, env=ENV, cwd=REPO,
    )
    *err, status = p.stderr.decode().rstrip("\n").split("\n")
    return p.stdout, "\n".join(err).encode(), [int(x) for x in status.split()]


def test_epipe_leaves_the_cursor_where_the_run_found_it(big: Any, tmp_path: Path) -> None:
    cursor = tmp_path / "c"
    cursor.write_text("3\n")
    out, err, status = pipeline(f"{LOGD} read -H {big.addr} --cursor-file {cursor} -o json | head -1")
    assert json.loads(out) == {"id": 4, "body": "record 000004"}
    assert status == [141, 0], err
    assert cursor.read_text() == "3\n"
    assert b"Traceback" not in err
    assert b"cursor" in err  # says where it left the cursor


def test_epipe_without_a_cursor_file_creates_none(big: Any, tmp_path: Path) -> None:
    cursor = tmp_path / "c"
    out, err, status = pipeline(f"{LOGD} read -H {big.addr} --cursor-file {cursor} -o raw | head -3")
    assert out == b"record 000001\nrecord 000002\nrecord 000003\n"
    assert status == [141, 0], err
    assert not cursor.exists()


def test_consumer_failing_mid_stream_does_not_advance_the_cursor(big: Any, tmp_path: Path) -> None:
    cursor = tmp_path / "c"
    cursor.write_text("10\n")
    consumer = f"{sys.executable} -c 'import sys; [sys.stdin.readline() for _ in range(10)]; sys.exit(1)'"
    _, err, status = pipeline(f"{LOGD} read -H {big.addr} --cursor-file {cursor} | {consumer}")
    assert status == [141, 1], err
    assert cursor.read_text() == "10\n"


def test_unbuffered_nonblocking_stdout_loses_no_bytes(big: Any) -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)  # as a shared non-blocking tty or socket would be
    proc = subprocess.Popen(
        [sys.executable, "-m", "logd", "read", "-H", big.addr, "-o", "raw"],
        stdout=w, stderr=subprocess.PIPE, env={**ENV, "PYTHONUNBUFFERED": "1"}, cwd=REPO,
    )
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            data = f.read(4096)  # small reads: the pipe fills and writes come back short
            if not data:
                break
            chunks.append(data)
    assert proc.wait(30) == 0
    expected = b"".join(b"record %06d\n" % i for i in range(1, 50_001))
    assert b"".join(chunks) == expected


CONSUMER = """\
import sys
data = sys.stdin.buffer.read()
open(sys.argv[1], "ab").write(data)
sys.exit(int(sys.argv[2]))
"""


def test_exec_advances_the_cursor_only_when_the_command_exits_0(logd_server: Any, tmp_path: Path) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        c.append(*[b"r%d" % i for i in range(1, 8)])
    script = tmp_path / "consume.py"
    script.write_text(CONSUMER)
    got, cursor = tmp_path / "got", tmp_path / "c"
    base = ("read", "-H", srv.addr, "--cursor-file", str(cursor), "-o", "raw", "--exec")

    r = logd_cli(*base, f"{sys.executable} {script} {got} 3")
    assert r.returncode == 1, r.stderr
    assert b"exited 3" in r.stderr
    assert not cursor.exists()
    assert got.read_bytes() == b"r1\nr2\nr3\nr4\nr5\nr6\nr7\n"

    got.unlink()
    r = logd_cli(*base, f"{sys.executable} {script} {got} 0", "-n", "5")
    assert r.returncode == 0, r.stderr
    assert cursor.read_text() == "5\n"
    assert got.read_bytes() == b"r1\nr2\nr3\nr4\nr5\n"

    r = logd_cli(*base, f"{sys.executable} {script} {got} 0")
    assert (r.returncode, cursor.read_text()) == (0, "7\n")
    assert got.read_bytes() == b"r1\nr2\nr3\nr4\nr5\nr6\nr7\n"


def test_exec_follow_runs_the_command_per_batch(logd_server: Any, tmp_path: Path) -> None:
    srv = logd_server()
    script = tmp_path / "consume.py"
    script.write_text(CONSUMER)
    got, cursor = tmp_path / "got", tmp_path / "c"
    with logd.connect(srv.addr) as c:
        c.append(b"a", b"b")
        proc = spawn("read", "-H", srv.addr, "-f", "-n", "3", "--cursor-file", str(cursor),
                     "-o", "raw", "--exec", f"{sys.executable} {script} {got} 0")
        try:
            deadline = time.monotonic() + 20
            while not (cursor.exists() and cursor.read_text() == "2\n"):
                assert time.monotonic() < deadline and proc.poll() is None, "first batch not saved"
                time.sleep(0.02)
            c.append(b"c")
            assert proc.wait(20) == 0
        finally:
            proc.kill()
            proc.wait(10)
    assert cursor.read_text() == "3\n"
    assert got.read_bytes() == b"a\nb\nc\n"


# -- item 17: cursor file paths ---------------------------------------------------------


@pytest.mark.parametrize("where", ["missing/dir/c", "."])
def test_bad_cursor_file_path_is_one_line_exit_2(logd_server: Any, tmp_path: Path, where: str) -> None:
    srv = logd_server()
    logd_cli("write", "-H", srv.addr, "x")
    r = logd_cli("read", "-H", srv.addr, "--cursor-file", str(tmp_path / where))
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.splitlines()) == 1 and b"cursor file" in r.stderr, r.stderr


# -- item 11: wait for a server that is not up yet ---------------------------------------


def test_read_follow_reconnect_waits_for_the_first_connection(logd_server: Any, tmp_path: Path) -> None:
    sock = tmp_path / "logd.sock"
    proc = spawn("read", "-H", str(sock), "-f", "--reconnect", "--wait", "60", "-n", "1", "-o", "raw")
    try:
        srv = logd_server("--unix", str(sock))
        with logd.connect(srv.addr) as c:
            c.append(b"hello")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait(10)
    assert (proc.returncode, out) == (0, b"hello\n"), err


@pytest.mark.parametrize("args", [["read", "-f", "--reconnect"], ["ping"], ["write", "x"]])
def test_wait_is_bounded(args: list[str]) -> None:
    t0 = time.monotonic()
    r = logd_cli(*args, "-H", dead_address(), "--wait", "1")
    assert r.returncode == 3
    assert 0.9 < time.monotonic() - t0 < 15
    assert b"cannot connect" in r.stderr


# -- item 18: the command line -----------------------------------------------------------


def test_version() -> None:
    r = logd_cli("--version")
    assert (r.returncode, r.stdout) == (0, f"logd {logd.__version__}\n".encode())


def test_options_before_the_subcommand(logd_server: Any) -> None:
    srv = logd_server()
    logd_cli("write", "-H", srv.addr, "a", "b")
    r = logd_cli("-H", srv.addr, "head")
    assert (r.returncode, r.stdout) == (0, b"2\n"), r.stderr
    r = logd_cli("--timeout", "3", "-H", srv.addr, "read", "-o", "raw")
    assert (r.returncode, r.stdout) == (0, b"a\nb\n"), r.stderr
    r = logd_cli("-H", dead_address(), "ping", "-H", srv.addr)  # the later one wins
    assert r.returncode == 0, r.stderr


def test_read_follow_starts_at_the_last_10(logd_server: Any) -> None:
    srv = logd_server()
    with logd.connect(srv.addr) as c:
        c.append(*[b"%d" % i for i in range(1, 16)])
    r = logd_cli("read", "-H", srv.addr, "-f", "-n", "3")
    assert [x["id"] for x in json_lines(r.stdout)] == [6, 7, 8]


def test_connection_refused_says_what_to_do() -> None:
    r = logd_cli("head", "-H", dead_address())
    assert r.returncode == 3
    msg = r.stderr.decode()
    assert "logd serve" in msg and "-H" in msg and "LOGD_HOST" in msg
    assert len(msg.splitlines()) <= 2


def test_paused_reader_is_told_why_it_was_dropped(logd_server: Any) -> None:
    srv = logd_server("--send-timeout", "1")
    with logd.connect(srv.addr) as c:
        c.append_many([[b"x" * 1000] * 1000 for _ in range(40)])  # 40 MB: more than the buffers
    # A tail reader that stops reading (`logd read -f | less`) is dropped after
    # --send-timeout; a bounded READ would wait for it (docs/protocol.rst).
    proc = spawn("read", "-H", srv.addr, "-f", "--from", "begin", "-o", "raw", stdin=subprocess.DEVNULL)
    try:
        srv.wait_event("slow_reader_dropped", timeout=30)  # we do not read
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 3
    assert b"--send-timeout" in err and b"--from" in err, err
    last = out.count(b"\n")
    assert b"--from %d" % (last + 1) in err


def test_write_error_reply_mid_stream_is_counted_exactly(logd_server: Any) -> None:
    srv = logd_server("--max-message", "1000")
    data = b"ok 1\nok 2\n" + b"x" * 2000 + b"\nok 4\nok 5\n"
    r = logd_cli("write", "-H", srv.addr, "--batch", "1", input=data)
    assert r.returncode == 1, r.stderr
    got = summary(r.stderr)
    assert got["read"] == 5
    assert got["written"] == head(srv.addr) == len(r.stdout.split())
    assert b"3 not written (error reply)" in r.stderr  # the server stops at a framing error
    assert b"Traceback" not in r.stderr


def test_help_shows_defaults_choices_and_examples() -> None:
    write = " ".join(logd_cli("write", "--help").stdout.decode().split())  # wrapping aside
    assert "default: 1000" in write and "default: 1MiB" in write and "default: 5" in write
    read = " ".join(logd_cli("read", "--help").stdout.decode().split())
    assert "{raw,json,text}" in read and "-10 with -f" in read
    for text in (write, read):
        assert "examples:" in text and "exit codes:" in text and "141" in text
