"""The server as a process (issue 8, items 8 and 9): what systemd is told, signals, the admin setting.

The fixture's datagram socket (notify.py) stands in for systemd's notify
socket, at a path and at an abstract name (``@name``), as ``$NOTIFY_SOCKET`` gives them.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from datetime import datetime
from pathlib import Path

import pytest

from .wire import Wire

pytestmark = pytest.mark.integration

DEADLINE = 15.0


@pytest.fixture(params=["path", "abstract"])
def kind(request) -> str:
    return request.param


def when(entry: dict) -> float:
    return datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()


def test_ready_after_listening_and_stopping_at_sigterm(logd_server, kind: str) -> None:
    srv = logd_server(notify=kind)
    notify = srv.notify
    got = notify.until("READY=1")
    listening = srv.wait_event("listening")
    ready_at = notify.with_line("READY=1")[0].wall
    assert ready_at >= when(listening) - 0.001  # sent after the line was written
    assert got[0] == f"STATUS=opening the log in {srv.data_dir}"
    assert got[-1] == "READY=1\nSTATUS=primary epoch 1: head 0, synced 0, no followers"
    assert not any("STOPPING=1" in m for m in got)
    srv.proc.send_signal(signal.SIGTERM)
    got = notify.until("STOPPING=1")
    assert srv.proc.wait(DEADLINE) == 0
    assert got[-1] == "STOPPING=1"
    assert [e["reason"] for e in srv.events("shutdown_started")] == ["SIGTERM"]


def test_recovery_extends_the_start_timeout_before_ready(logd_server, kind: str, tmp_path: Path) -> None:
    first = logd_server("--fsync", "never", data_dir=tmp_path / "d")
    w = Wire(first.host, first.port, timeout=10)
    for i in range(20):
        w.cmd("MSG", b"hello")
    assert [w.line() for _ in range(20)][-1] == b"OK 20\r\n"
    first.kill()  # a crash: the next start verifies what follows the recovery point
    srv = logd_server("--verify-on-start", "full", data_dir=tmp_path / "d", notify=kind)
    got = srv.notify.until("READY=1")
    verifying = [i for i, m in enumerate(got) if m.startswith("EXTEND_TIMEOUT_USEC=")]
    assert verifying and got[verifying[0]] == "EXTEND_TIMEOUT_USEC=10000000"
    assert got[verifying[0] + 1].startswith("STATUS=verifying partition 1 (")
    assert got.index("READY=1\nSTATUS=primary epoch 1: head 20, synced 20, no followers") > verifying[-1]
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
