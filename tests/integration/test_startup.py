"""Starting up: listening addresses taken or stale, and what start-up verifies.

Real ``logd serve`` processes; a server that must refuse to start is run with
``subprocess.run`` and a timeout, and its exit code and log lines are checked.
"""

from __future__ import annotations

import json
import os
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
