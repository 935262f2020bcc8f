"""Starting up: listening addresses taken or stale, and what start-up verifies.

Real ``logd serve`` processes; a server that must refuse to start is run with
``subprocess.run`` and a timeout, and its exit code and log lines are checked.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from .wire import Wire

pytestmark = pytest.mark.integration


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # Unix socket paths must fit in 108 bytes; pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="logd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serve_fails(*flags: str, timeout: float = 20) -> tuple[int, list[dict[str, Any]]]:
    """Run a ``logd serve`` that must exit by itself; its exit code and log events."""
    proc = subprocess.run([sys.executable, "-m", "logd", "serve", "--log-format", "json", *flags],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    events = []
    for line in proc.stderr.decode(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "stderr", "line": line})
    return proc.returncode, events


def ping_unix(path: Path) -> bytes:
    w = Wire(str(path), timeout=5)
    try:
        w.send(b"PING 0\r\n")
        return w.line()
    finally:
        w.sock.close()


# -- item 8: a unix socket another server owns ----------------------------------------


def test_second_server_refuses_a_live_unix_socket(logd_server, short_tmp):
    path = short_tmp / "logd.sock"
    first = logd_server("--unix", str(path))
    inode = path.stat().st_ino
    code, events = serve_fails("--port", "0", "--data-dir", str(short_tmp / "other"), "--unix", str(path))
    assert code == 1
    failed = [e for e in events if e["event"] == "startup_failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == (f"unix socket {path} is in use by another server; "
                                  "stop it or choose another --unix path")
    assert not any(e["event"] == "listening" for e in events)
    # The first server keeps its socket and answers on it.
    assert path.stat().st_ino == inode
    assert ping_unix(path) == b"PONG\r\n"
    assert first.stop() == 0
    assert not path.exists()


def test_a_stale_unix_socket_file_is_replaced(logd_server, short_tmp):
    path = short_tmp / "logd.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a socket file with nobody listening: what a crash leaves
    dead.close()
    assert path.exists()
    srv = logd_server("--unix", str(path))
    assert ping_unix(path) == b"PONG\r\n"
    assert srv.stop() == 0
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_left_alone(short_tmp):
    path = short_tmp / "logd.sock"
    path.write_bytes(b"not a socket")
    code, events = serve_fails("--port", "0", "--data-dir", str(short_tmp / "d"), "--unix", str(path))
    assert code == 1
    assert [e["error"] for e in events if e["event"] == "startup_failed"] == [
        f"unix socket path {path} exists and is not a socket; remove it or choose another --unix path"]
    assert path.read_bytes() == b"not a socket"


def test_exit_removes_the_socket_only_if_it_is_still_ours(logd_server, short_tmp):
    path = short_tmp / "logd.sock"
    srv = logd_server("--unix", str(path))
    path.unlink()  # someone else takes the path meanwhile
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(str(path))
        other.listen(1)
        inode = path.stat().st_ino
        assert srv.stop() == 0
        assert path.exists() and path.stat().st_ino == inode
    finally:
        other.close()


# -- item 10: the address is taken -----------------------------------------------------


def test_a_taken_port_fails_at_once_naming_it_before_opening_the_log(logd_server, tmp_path):
    first = logd_server()
    data = tmp_path / "second"
    code, events = serve_fails("--port", str(first.port), "--data-dir", str(data))
    assert code == 1
    assert [e["error"] for e in events if e["event"] == "startup_failed"] == [
        f"address 127.0.0.1:{first.port} is already in use"]
    names = [e["event"] for e in events]
    assert "log_opened" not in names  # failed before any verification
    assert not data.exists()  # and before touching the data dir


# -- item 10: what a restart verifies --------------------------------------------------


def _append(w: Wire, *bodies: bytes) -> int:
    w.cmd("MSG", *bodies)
    line = w.line()
    assert line.startswith(b"OK "), line
    return int(line[3:-2])


def _read(w: Wire, start: int, limit: int) -> list[tuple[int, bytes]]:
    from .wire import records

    w.cmd("READ", start, limit)
    return records(w.read_until(b"+EOF\r\n")[4:])


def test_restart_trusts_the_clean_marker_and_the_recovery_point(logd_server):
    srv = logd_server("--partition-size", "64KiB")
    w = Wire(srv.host, srv.port)
    body = lambda i: b"restart %06d " % i + b"q" * 80
    for i in range(0, 3000, 100):
        assert _append(w, *(body(j) for j in range(i + 1, i + 101))) == i + 100
    parts = len([p for p in srv.data_dir.iterdir() if p.suffix == ".log"])
    assert parts >= 4

    srv.restart()  # clean stop, clean start: no record is verified
    done = srv.wait_event("log_verified")
    assert done["partitions_clean"] == parts and done["verified_mib"] == 0
    assert "partitions_full" not in done and not srv.events("verifying")

    w = Wire(srv.host, srv.port)
    assert _append(w, *(body(j) for j in range(3001, 3101))) == 3100
    srv.kill()  # kill -9: the recovery point written at open (and after fsyncs) bounds the work
    srv.logs.clear()
    srv.start()
    done = srv.wait_event("log_verified")
    assert done.get("partitions_partial", 0) >= 1 and "partitions_clean" not in done
    assert done.get("partitions_full", 0) <= 1  # at most a partition rolled after the point
    w = Wire(srv.host, srv.port)
    assert _read(w, 1, 3100) == [(i, body(i)) for i in range(1, 3101)]

    srv.restart("--partition-size", "64KiB", "--verify-on-start", "full")
    done = srv.wait_event("log_verified")
    assert done["partitions_full"] == done["partitions"] and done["verified_mib"] > 0
    assert srv.events("verifying")[0]["partitions"] == done["partitions"]
