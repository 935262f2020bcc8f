"""The server as a process (issue 8, items 8 and 9): what systemd is told, signals, the admin setting.

A datagram socket the test owns stands in for systemd's notify socket, at a
path and at an abstract name (``@name``), as ``$NOTIFY_SOCKET`` gives them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pytest

from .wire import Wire

pytestmark = pytest.mark.integration

DEADLINE = 15.0


class NotifySocket:
    def __init__(self, kind: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dir: str | None = None
        if kind == "path":
            self.dir = tempfile.mkdtemp(prefix="logd-n-", dir="/tmp")  # sun_path holds 108 bytes
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)
        else:
            name = f"logd-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        self.messages: list[tuple[float, str]] = []  # (wall time received, datagram)

    def until(self, text: str, timeout: float = DEADLINE) -> list[str]:
        """Receive until a datagram containing ``text`` line; all received so far."""
        deadline = time.monotonic() + timeout
        while not any(text in m.split("\n") for _, m in self.messages):
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} within {timeout}s; got {self.texts()}"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.time(), data.decode()))
        return self.texts()

    def texts(self) -> list[str]:
        return [m for _, m in self.messages]

    def close(self) -> None:
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def notify(request) -> Iterator[NotifySocket]:
    n = NotifySocket(request.param)
    yield n
    n.close()


def when(entry: dict) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def test_ready_after_listening_and_stopping_at_sigterm(logd_server, notify: NotifySocket) -> None:
    srv = logd_server(env={"NOTIFY_SOCKET": notify.address})
    got = notify.until("READY=1")
    listening = srv.wait_event("listening")
    ready_at = next(t for t, m in notify.messages if "READY=1" in m.split("\n"))
    assert ready_at >= when(listening) - 0.001  # sent after the line was written
    assert got[0] == f"STATUS=opening the log in {srv.data_dir}"
    assert got[-1] == "READY=1\nSTATUS=serving head=0"
    assert not any("STOPPING=1" in m for m in got)
    srv.proc.send_signal(signal.SIGTERM)
    got = notify.until("STOPPING=1")
    assert srv.proc.wait(DEADLINE) == 0
    assert got[-1] == "STOPPING=1"
    assert [e["reason"] for e in srv.events("shutdown_started")] == ["SIGTERM"]


def test_recovery_extends_the_start_timeout_before_ready(logd_server, notify: NotifySocket, tmp_path: Path) -> None:
    first = logd_server("--fsync", "never", data_dir=tmp_path / "d")
    w = Wire(first.host, first.port, timeout=10)
    for i in range(20):
        w.cmd("MSG", b"hello")
    assert [w.line() for _ in range(20)][-1] == b"OK 20\r\n"
    first.kill()  # a crash: the next start verifies what follows the recovery point
    srv = logd_server("--verify-on-start", "full", data_dir=tmp_path / "d", env={"NOTIFY_SOCKET": notify.address})
    got = notify.until("READY=1")
    verifying = [i for i, m in enumerate(got) if m.startswith("EXTEND_TIMEOUT_USEC=")]
    assert verifying and got[verifying[0]] == "EXTEND_TIMEOUT_USEC=10000000"
    assert got[verifying[0] + 1].startswith("STATUS=verifying partition 1 (")
    assert got.index("READY=1\nSTATUS=serving head=20") > verifying[-1]
    assert srv.events("verifying")


def test_sighup_logs_reopen_and_keeps_serving(logd_server) -> None:
    srv = logd_server()
    srv.proc.send_signal(signal.SIGHUP)
    srv.wait_event("reopen")
    w = Wire(srv.host, srv.port, timeout=10)
    w.send(b"PING\r\n")
    assert w.line() == b"PONG\r\n"
    assert srv.proc.poll() is None  # teardown: SIGTERM, exit 0 (the fixture checks)


def test_admin_from_decides_who_may_shut_down(logd_server, tmp_path: Path) -> None:
    short = Path(tempfile.mkdtemp(prefix="logd-", dir="/tmp"))
    try:
        srv = logd_server("--admin-from", "none", "--unix", str(short / "s"))
        w = Wire(srv.host, srv.port, timeout=10)
        w.send(b"SHUTDOWN\r\n")
        assert w.line() == b"ERR_CLIENT FORBIDDEN SHUTDOWN is accepted only from the unix socket\r\n"
        u = Wire(str(short / "s"), timeout=10)
        u.send(b"SHUTDOWN\r\n")
        assert u.line() == b"OK\r\n"
        assert srv.proc.wait(DEADLINE) == 0
        assert [e["reason"] for e in srv.events("shutdown_started")] == ["SHUTDOWN"]
    finally:
        shutil.rmtree(short, ignore_errors=True)
