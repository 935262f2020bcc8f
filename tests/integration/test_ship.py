"""structlog shipping end to end: a program (tests/integration/ship_program.py) logs through
``logd.ship.LogdShipper`` to a real ``logd serve``; the events are READ back and decoded.

Run plain and under gevent's monkey-patching (the sender is then a greenlet).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import logd

from .test_client_examples import REPO, free_port, indented_block

pytestmark = pytest.mark.integration

PROGRAM = Path(__file__).with_name("ship_program.py")
MODES = ["thread", "gevent"]


def start(address: str, count: int, mode: str, *flags: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(PROGRAM), address, str(count), *flags]
    if mode == "gevent":
        cmd.append("--gevent")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> tuple[str, float]:
    """Wait for the program; its stdout and how long the wait took."""
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the program did not exit within {timeout}s: {out!r} {err[-2000:]!r}")
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    return out, time.monotonic() - t0


def read_back(address: str) -> list[dict[str, Any]]:
    with logd.connect(address) as c:
        head = c.head()
        if head == 0:
            return []
        records = list(c.read(1, head, decode=True))
    assert [r.id for r in records] == list(range(1, head + 1))
    assert all(isinstance(r.obj, dict) for r in records)
    return [r.obj for r in records]


def expected(i: int) -> dict[str, Any]:
    """What ship_program.py logs for event ``i``, as structlog hands it over."""
    return {"i": i, "text": f"line {i}", "ratio": i / 2, "tags": ["a", i], "obj": "opaque!",
            "event": "step", "level": "info"}


@pytest.mark.parametrize("mode", MODES)
def test_events_arrive_in_order_as_msgpack_maps(logd_server: Any, mode: str) -> None:
    srv = logd_server()
    out, _ = finish(start(srv.addr, 500, mode))
    assert out.splitlines()[-1] == "done 0"
    events = read_back(srv.addr)
    assert events == [expected(i) for i in range(500)]  # keys, values, order; nothing else
    assert list(events[0]) == list(expected(0))  # keys in structlog's order


@pytest.mark.parametrize("mode", MODES)
def test_server_down_neither_blocks_nor_crashes_and_drops_are_reported(
        logd_server: Any, tmp_path: Path, mode: str) -> None:
    port = free_port()  # picked now; bound by the server later
    go = tmp_path / "go"
    proc = start(f"127.0.0.1:{port}", 300, mode, "--max-events", "100", "--wait-file", str(go),
                 "--then", "5", "--exit-timeout", "20")
    assert proc.stdout is not None
    t0 = time.monotonic()
    logged = proc.stdout.readline().split()
    assert logged[0] == "logged" and float(logged[1]) < 2.0, logged  # never blocked on the server
    assert time.monotonic() - t0 < 15.0
    assert proc.poll() is None  # alive, waiting for the go
    srv = logd_server("--port", str(port))
    assert srv.port == port
    go.touch()
    out, _ = finish(proc)
    assert out.splitlines()[-2] == "flushed True"  # reconnected, and the backlog went
    dropped = int(out.split()[-1])
    events = read_back(srv.addr)
    steps = [e["i"] for e in events if e["event"] == "step"]
    reports = [e for e in events if e["event"] == "logd_ship_dropped"]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert steps[-5:] == list(range(300, 305))  # logged after the server came back: all there
    assert dropped > 0 and sum(r["dropped"] for r in reports) == dropped == 305 - len(steps)
    assert all(r["buffer_full"] == r["dropped"] and r["level"] == "warning" for r in reports)
    assert all(e == expected(e["i"]) for e in events if e["event"] == "step")
    # In place: each report stands where the events it counts were lost.
    for r in reports:
        at = events.index(r)
        before, after = events[at - 1]["i"], events[at + 1]["i"]
        assert after - before - 1 == r["dropped"]


def wait_head(address: str, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with logd.connect(address) as c:
        while c.head() < n:
            assert time.monotonic() < deadline, f"head {c.head()}, not {n}, after {timeout}s"
            time.sleep(0.02)


@pytest.mark.parametrize("mode", MODES)
def test_server_restart_on_the_same_port_loses_nothing(logd_server: Any, tmp_path: Path, mode: str) -> None:
    port = free_port()
    srv = logd_server("--port", str(port))
    go = tmp_path / "go"
    proc = start(srv.addr, 100, mode, "--wait-file", str(go), "--then", "50", "--exit-timeout", "20")
    wait_head(srv.addr, 100)  # shipped on an open connection, which the restart breaks
    srv.restart("--port", str(port))
    assert srv.port == port
    go.touch()
    out, _ = finish(proc)
    assert out.splitlines()[-2:] == ["flushed True", "done 0"]
    assert read_back(srv.addr) == [expected(i) for i in range(150)]  # no gap, no drop, no duplicate


def test_a_forked_child_ships_on_its_own(logd_server: Any) -> None:
    srv = logd_server()
    out, _ = finish(start(srv.addr, 20, "thread", "--fork", "--then", "10"))
    lines = out.splitlines()
    assert lines[-2:] == ["flushed True reconnects 0", "done 0"]  # the parent's connection survived the child
    assert "child 0" in lines
    # Each exactly once: the child neither resent the parent's buffer nor broke its socket.
    assert read_back(srv.addr) == [expected(i) for i in range(40)]


@pytest.mark.parametrize("mode", MODES)
def test_exit_flushes_what_is_buffered(logd_server: Any, mode: str) -> None:
    srv = logd_server()
    # A batch of 1000 and a linger of a minute: only the exit flush sends these.
    out, took = finish(start(srv.addr, 200, mode, "--batch", "1000", "--linger", "60"))
    assert out.splitlines()[-1] == "done 0"
    assert read_back(srv.addr) == [expected(i) for i in range(200)]
    assert took < 20.0


@pytest.mark.parametrize("mode", MODES)
def test_exit_wait_is_bounded_when_the_server_is_down(mode: str) -> None:
    port = free_port()  # nothing listens there
    proc = start(f"127.0.0.1:{port}", 200, mode, "--exit-timeout", "1")
    t0 = time.monotonic()
    out, _ = finish(proc, timeout=30.0)
    took = time.monotonic() - t0
    assert out.splitlines()[-1] == "done 0"
    assert 1.0 <= took < 6.0, took  # the 1 s exit wait, plus starting Python


def test_logd_read_shows_shipped_fields(logd_server: Any) -> None:
    srv = logd_server()
    finish(start(srv.addr, 3, "thread"))
    run = [sys.executable, "-m", "logd", "read", "-H", srv.addr]
    lines = subprocess.run([*run, "-o", "json"], capture_output=True, text=True, timeout=30, check=True).stdout
    got = [json.loads(line) for line in lines.splitlines()]
    assert [g["id"] for g in got] == [1, 2, 3]
    assert [g["fields"] for g in got] == [expected(i) for i in range(3)]
    assert all("body_base64" in g for g in got)  # the exact bytes, as before
    text = subprocess.run([*run, "-o", "text"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert text.splitlines()[0] == '1\t[info] step i=0 text="line 0" ratio=0.0 tags=["a", 0] obj=opaque!'


# -- the example in docs/client.rst -------------------------------------------------------


def docs_ship_example() -> str:
    lines = (REPO / "docs" / "client.rst").read_text().splitlines()
    heading = lines.index("Shipping structlog events")
    at = next(i for i in range(heading, len(lines)) if lines[i].startswith(".. code-block:: python"))
    return indented_block(lines, at)


def test_docs_example_runs(logd_server: Any, tmp_path: Path) -> None:
    code = docs_ship_example()
    assert len(code.strip().splitlines()) <= 12 and "127.0.0.1:1774" in code
    srv = logd_server()
    script = tmp_path / "example.py"
    script.write_text(code.replace("127.0.0.1:1774", srv.addr))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "order_paid" in done.stdout  # the program's own console output goes on
    events = read_back(srv.addr)
    assert [e["event"] for e in events] == ["order_paid", "order_shipped"]
    assert events[0]["order"] == 42 and events[0]["amount"] == 9.5 and events[0]["level"] == "info"
    assert "timestamp" in events[0]
