"""Checks of the issue-12 additions: W1py/W2py/W4py (each system's own Python client) and W3 at
several connection counts. The pure parts (``--w3-conns``, workload names, rows, the fd check, the
"not installed" path) as unit tests; the workloads briefly against real servers (no timing).

Run: ``python -m pytest bench/test_pyclients.py -q``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import pyclients  # noqa: E402
import run  # noqa: E402
import servers  # noqa: E402

# -- --w3-conns and the W3 names ---------------------------------------------------------


def test_parse_w3_conns():
    assert run.parse_w3_conns("64,256,1024") == [64, 256, 1024]
    assert run.parse_w3_conns(" 256 , 64,256") == [256, 64]  # duplicates once, order kept
    for bad in ("", "64,", "x", "0", "-4", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            run.parse_w3_conns(bad)
    assert run.parse_args(["--w3-conns", "8,16"]).w3_conns == [8, 16]
    assert run.parse_args([]).w3_conns == [64]


def test_w3_names_round_trip():
    for n in (1, 8, 64, 256, 1024):
        assert run.w3_conns(run.w3_name(n)) == n
    assert run.w3_name(64) == "W3" and run.w3_name(256) == "W3c256"
    for not_w3 in ("W1", "W3c", "W3c0", "W3cx", "W31", "W1py"):
        assert run.w3_conns(not_w3) is None


def test_expand_and_order():
    sel = run.expand_w3(run._csv("w4py,W3,w3C8,W1py,W1", run.ALL, "workload"), [1024, 64, 256])
    assert sel == ["W4py", "W3", "W3c256", "W3c1024", "W3c8", "W1py", "W1"]
    # W1 before W1py before the W4s (they read what the writes left), W3s by count
    assert run.shared_order(sel + ["W6"]) == ["W1", "W1py", "W4py", "W3c8", "W3", "W3c256", "W3c1024"]
    with pytest.raises(SystemExit):
        run._csv("W9", run.ALL, "workload")


def test_rows_per_w3_count_and_py_targets():
    rows = run.rows_for(["W3c1024", "W3", "W4py", "W1py"])
    names = [r[0] for r in rows]
    assert names == ["W1py"] * 2 + ["W3"] * 3 + ["W3c1024"] * 3 + ["W4py"] * 2
    assert [r[1] for r in rows if r[0] == "W3c1024"] == [r[1] for r in run.ROWS if r[0] == "W3"]
    assert ("W4py", "msgs/s", "msgs_per_s", ">=", 2.0) in rows
    assert run.primary_key("W3c256") == run.PRIMARY["W3"] == "msgs_per_s"


def test_combine_picks_the_median_run_of_a_w3_count():
    runs = [{"msgs_per_s": v} for v in (5.0, 1.0, 3.0)]
    med = run.combine("W3c256", runs)
    assert med["msgs_per_s"] == 3.0 and med["repeats"] == [5.0, 1.0, 3.0]


def test_fd_shortfall():
    assert run.fd_shortfall(1024, 20000) == ""
    assert run.fd_shortfall(1024, 1024 + run.FD_MARGIN) == ""
    msg = run.fd_shortfall(1024, 1024)
    assert "1024 connections" in msg and "RLIMIT_NOFILE is 1024" in msg


def test_raise_nofile_reaches_the_hard_limit():
    import resource

    soft, hard = run.raise_nofile()
    assert soft == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def test_table_says_not_installed(monkeypatch):
    results = {"interval": {"logd": {"W4py": {"msgs_per_s": 10.0}},
                            "redis": {"W4py": {"not_installed": pyclients.NOT_INSTALLED}}}}
    text, records = run.table(results, ["W4py"], ["interval"])
    rec = records[0]
    assert rec["redis"] == "not installed" and rec["ratio"] is None and rec["verdict"] == "n/a"
    assert "not installed" in text


def test_redis_workloads_without_redis_py(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    assert pyclients.redis_py_missing() == "not installed: pip install redis hiredis"
    # says so without touching the network (port 1 would refuse)
    assert pyclients.write(1, "redis", 1, 1, 1, None, timeout=1) == {"not_installed": pyclients.NOT_INSTALLED}
    assert pyclients.read(1, "redis", 1, timeout=1) == {"not_installed": pyclients.NOT_INSTALLED}


# -- against real servers --------------------------------------------------------------------

PLAN = {"W1": {"msgs": 1000, "per_request": 100, "in_flight": 3}, "W2": {"requests": 25},
        "W3": {"conns": [3, 5], "procs": 2, "seconds": 0.3}, "W4": {"msgs": 1500}}


def _check(system: str, server) -> None:
    r = run.run_workload("W1py", server, PLAN)
    assert r["msgs"] == 1000 and r["requests"] == 10
    r = run.run_workload("W2py", server, PLAN)
    assert r["msgs"] == r["requests"] == r["n"] == 25  # one latency per request
    assert r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
    run.workloads.write_loop(server.port, system, 5, 100, 2, None, timeout=60)  # 1,525 written in all
    r = run.run_workload("W4py", server, PLAN)
    assert r["msgs"] == 1500
    for w in ("W3c3", "W3c5"):
        r = run.run_workload(w, server, PLAN)
        assert r["conns"] == run.w3_conns(w) and r["msgs"] > 0 and r["window_server_cpu"] >= 0


def test_logd_library_workloads(tmp_path):
    pytest.importorskip("logd.cli")
    with servers.LogdServer("interval", str(tmp_path)) as s:
        _check("logd", s)
    assert s.exit_code == 0
    assert os.listdir(tmp_path) == []


def test_redis_py_workloads(tmp_path):
    try:
        servers.redis_binary(install=False)
    except servers.ServerError:
        pytest.skip("redis-server not installed")
    why = pyclients.redis_py_missing()
    if why:
        pytest.skip(f"redis-py with hiredis {why}")
    with servers.RedisServer("interval", str(tmp_path)) as s:
        _check("redis", s)
    assert os.listdir(tmp_path) == []
