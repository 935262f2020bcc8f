"""The data directory's identity and its writer lock, met by real processes
(issue 8 item 5): the lock names its holder to a second writer and to ``logd
check``; the meta file is created once, adopted into old directories, and a
bad one stops the server naming it, never replaced."""

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


# -- the meta file ----------------------------------------------------------------------


def _meta(data: Path) -> dict:
    raw = (data / "meta").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1  # one line, for cat
    return json.loads(raw)


def test_a_new_directory_gets_a_history_that_survives_restarts(logd_server):
    srv = logd_server()
    first = _meta(srv.data_dir)
    assert list(first) == ["format", "history", "created", "role", "epochs"]
    assert (first["format"], first["role"], first["epochs"]) == (1, "primary", [[1, 1]])
    assert [e["history"] for e in srv.events("meta_created")] == [first["history"]]
    srv.restart()
    assert _meta(srv.data_dir) == first
    assert srv.events("meta_created") == [srv.events("meta_created")[0]]  # only the first start
    assert srv.stop() == 0
    check = run_logd("check", str(srv.data_dir))
    assert check.returncode == 0, check.stdout
    assert (f"meta: format 1, history {first['history']}, role primary, created {first['created']}"
            in check.stdout.decode().splitlines())


def test_a_directory_from_before_issue_8_is_adopted(logd_server):
    srv = logd_server()
    w = Wire(srv.host, srv.port)
    w.cmd("MSG", b"one", b"two")
    assert w.line() == b"OK 2\r\n"
    w.close()
    assert srv.stop() == 0
    (srv.data_dir / "meta").unlink()  # what an older logd leaves behind
    before = run_logd("check", str(srv.data_dir))
    assert before.returncode == 0, before.stdout
    assert "meta: none yet" in before.stdout.decode()
    assert not (srv.data_dir / "meta").exists()  # check never writes it
    srv.start()
    [created] = srv.events("meta_created")[-1:]
    assert _meta(srv.data_dir)["history"] == created["history"]
    w = Wire(srv.host, srv.port)
    w.cmd("READ", 1, 2)
    assert re.fullmatch(rb"OK\r\n\+1 3 1 [0-9a-f]{8}\r\none\r\n\+2 3 0 [0-9a-f]{8}\r\ntwo\r\n\+EOF\r\n",
                        w.read_until(b"+EOF\r\n"))
    w.close()
    assert srv.stop() == 0


def test_a_bad_meta_file_stops_the_server_naming_it(logd_server):
    srv = logd_server()
    assert srv.stop() == 0
    path = srv.data_dir / "meta"
    bad = path.read_bytes().replace(b'"format": 1', b'"format": 9')
    path.write_bytes(bad)
    code, events = serve_fails("--port", "0", "--data-dir", str(srv.data_dir))
    assert code == 1
    [failed] = [e["error"] for e in events if e["event"] == "startup_failed"]
    assert failed.startswith(f"metadata file {path}: format 9, but this logd reads only format 1")
    assert "log_opened" not in [e["event"] for e in events]
    assert path.read_bytes() == bad  # never replaced
    check = run_logd("check", str(srv.data_dir))
    assert check.returncode == 1, check.stdout
    out = check.stdout.decode().splitlines()
    assert out[0].startswith(f"metadata file {path}: format 9")
    assert out[-1] == f"{srv.data_dir}: meta unusable (see above): logd serve will not open it"
