"""The data directory's identity and its writer lock, met by real processes
(issue 8 item 5): the lock names its holder to a second writer, ``logd check``
reports it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_startup import serve_fails
from .wire import Wire

pytestmark = pytest.mark.integration

SINCE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def run_logd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "logd", *args], capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# -- the lock names its holder ------------------------------------------------------


def test_second_server_on_same_data_dir_names_the_first(logd_server):
    srv = logd_server()
    assert srv.proc is not None
    code, events = serve_fails("--port", "0", "--data-dir", str(srv.data_dir))
    assert code == 1
    [failed] = [e for e in events if e["event"] == "startup_failed"]
    assert re.fullmatch(rf"data directory {re.escape(str(srv.data_dir))} is in use by pid "
                        rf"{srv.proc.pid} \(logd serve, since {SINCE}\); stop it first",
                        failed["error"]), failed
    assert "log_opened" not in [e["event"] for e in events]
    # The lock file says the same to `cat`, and the first server is unharmed.
    doc = json.loads((srv.data_dir / "lock").read_bytes())
    assert doc["pid"] == srv.proc.pid and doc["program"] == "logd serve"
    assert f"since {doc['since']})" in failed["error"]
    w = Wire(srv.host, srv.port)
    w.cmd("MSG", b"still serving")
    assert w.line() == b"OK 1\r\n"
    w.close()
    assert srv.stop() == 0
    assert (srv.data_dir / "lock").read_bytes() == b""  # a clean stop names nobody


def test_check_on_a_live_directory_names_the_server(logd_server):
    srv = logd_server()
    assert srv.proc is not None
    who = rf"pid {srv.proc.pid} \(logd serve, since {SINCE}\)"
    fix = run_logd("check", "--fix", str(srv.data_dir))
    assert fix.returncode == 2, fix.stdout
    assert re.fullmatch(rf"{re.escape(str(srv.data_dir))}: in use by {who}; stop it before --fix\n",
                        fix.stdout.decode())
    plain = run_logd("check", str(srv.data_dir))
    assert plain.returncode == 0, plain.stdout
    first = plain.stdout.decode().splitlines()[0]
    assert re.fullmatch(rf"{re.escape(str(srv.data_dir))}: in use by {who}; the last MSG may be mid-write",
                        first)
    assert srv.stop() == 0


def test_a_server_does_not_start_under_check(logd_server, tmp_path: Path):
    """`logd check` holds the writer lock while it verifies; a server started
    meanwhile is told so, by pid."""
    from logd.log.lock import WriterLock

    data = tmp_path / "data"
    data.mkdir()
    with WriterLock.acquire(str(data), "logd check --fix") as lock:
        code, events = serve_fails("--port", "0", "--data-dir", str(data))
        assert code == 1
        [failed] = [e["error"] for e in events if e["event"] == "startup_failed"]
        assert failed == (f"data directory {data} is in use by pid {lock.holder.pid} "
                          f"(logd check --fix, since {lock.holder.since}); stop it first")
    srv = logd_server(data_dir=data)  # and starts once it is released
    assert srv.stop() == 0
