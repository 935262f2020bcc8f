"""Checks of the replication workloads' pure parts (replstats, the RESP/STATS parsers, the
WAIT codec, percentiles) and a brief run of W6-W8, W1m, W2m against real servers (no timing).

Run: ``python -m pytest bench/test_replication.py -q``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import replstats  # noqa: E402
import wire  # noqa: E402
import workloads  # noqa: E402
from wire import ReplyError  # noqa: E402

from tests.chunkers import bytewise, random_chunks  # noqa: E402


def prefixes(data: bytes, seed: int = 3):
    """The growing buffer a reader sees: whole, byte by byte, in random chunks."""
    for chunks in ([data], list(bytewise(data)), list(random_chunks(data, seed, largest=7))):
        buf = b""
        out = []
        for c in chunks:
            buf += c
            out.append(buf)
        yield out


def parse_growing(parse, data: bytes):
    """Feed ``parse`` ever longer prefixes: -1 until the last, then the value."""
    results = []
    for bufs in prefixes(data):
        for b in bufs[:-1]:
            assert parse(bytearray(b), 0)[0] == -1
        results.append(parse(bytearray(bufs[-1]), 0))
    return results


# -- percentiles ------------------------------------------------------------------------


def test_percentiles_nearest_rank():
    v = [i / 1000 for i in range(1, 101)]  # 1..100 ms, shuffled order must not matter
    out = workloads.percentiles(list(reversed(v)))
    assert out["n"] == 100
    assert out["p50_ms"] == pytest.approx(50) and out["p99_ms"] == pytest.approx(99)
    assert out["max_ms"] == pytest.approx(100) and out["mean_ms"] == pytest.approx(50.5)
    assert workloads.percentiles([0.002])["p99_ms"] == pytest.approx(2)
    assert workloads.percentiles([]) == {"n": 0}


# -- logd STATS -------------------------------------------------------------------------

STATS_BODY = (b"head: 1200\r\nfirst_id: 1\r\nfollowers: 2\r\n"
              b"follower_7: addr=127.0.0.1:5000 name=b written=1:130000:1000 synced=1:120000:900 lag_ids=200 "
              b"connected_since=2026-12-02T00:00:00Z last_report=0.1s\r\n"
              b"follower_12: addr=127.0.0.1:5001 name=- written=2:10:1190 synced=2:0:1100 lag_ids=10 "
              b"lag_seconds=0.25 last_report=never\r\n")


def test_parse_stats_and_followers():
    stats = replstats.parse_stats(STATS_BODY)
    assert stats["head"] == "1200" and stats["followers"] == "2"
    fl = replstats.follower_lines(stats)
    assert [f["addr"] for f in fl] == ["127.0.0.1:5000", "127.0.0.1:5001"]
    assert fl[0]["written"] == (1, 130000, 1000) and fl[0]["synced"] == (1, 120000, 900)
    assert fl[0]["lag_ids"] == 200 and "lag_seconds" not in fl[0]
    assert fl[1]["lag_seconds"] == 0.25 and fl[1]["written"][2] == 1190
    assert replstats.follower_lines(replstats.parse_stats(b"head: 3\r\nfollowers: 0\r\n")) == []


def test_parse_follower_lag_spellings():
    assert replstats.parse_follower("lag_s=1.5s")["lag_seconds"] == 1.5
    assert replstats.parse_follower("lag_ms=250")["lag_seconds"] == 0.25
    assert replstats.parse_follower("lag_seconds=2")["lag_seconds"] == 2
    assert "written" not in replstats.parse_follower("written=garbage")


def test_parse_body_reply_growing():
    reply = b"OK %d\r\n%s\r\n" % (len(STATS_BODY), STATS_BODY)
    for pos, body in parse_growing(wire.parse_body_reply, reply):
        assert pos == len(reply) and body == STATS_BODY
    with pytest.raises(ReplyError, match="REFUSED"):
        wire.parse_body_reply(bytearray(b"ERR_CLIENT REFUSED read replica\r\n"), 0)


# -- Redis ------------------------------------------------------------------------------

INFO_REPLICA = ("# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\n"
                "master_link_status:up\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:5000\r\n"
                "master_repl_offset:5000\r\n")
INFO_MASTER = ("# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
               "slave0:ip=127.0.0.1,port=6380,state=online,offset=4900,lag=0\r\nmaster_repl_offset:5000\r\n")


def test_parse_info_replication():
    m = replstats.parse_info(INFO_MASTER)
    assert m["role"] == "master" and m["master_repl_offset"] == 5000
    assert m["slave0"] == {"ip": "127.0.0.1", "port": 6380, "state": "online", "offset": 4900, "lag": 0}
    r = replstats.parse_info(INFO_REPLICA.encode())
    assert r["master_link_status"] == "up" and r["slave_repl_offset"] == 5000


def test_redis_synced():
    r = replstats.parse_info(INFO_REPLICA)
    assert replstats.redis_synced(r, 5000)
    assert not replstats.redis_synced(r, 5001)  # the master has more
    assert not replstats.redis_synced(dict(r, master_link_status="down"), 10)
    assert not replstats.redis_synced(dict(r, master_sync_in_progress=1), 10)
    assert not replstats.redis_synced(replstats.parse_info(INFO_MASTER), 0)  # not a replica


@pytest.mark.parametrize("data, value", [
    (b"+OK\r\n", "OK"),
    (b":42\r\n", 42),
    (b"$5\r\nhe\r\no\r\n", b"he\r\no"),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*2\r\n$1\r\na\r\n*2\r\n:1\r\n+x\r\n", [b"a", [1, "x"]]),
    (b"*0\r\n", []),
])
def test_parse_resp_growing(data, value):
    for pos, got in parse_growing(wire.parse_resp, data):
        assert pos == len(data) and got == value


def test_parse_resp_error_and_garbage():
    with pytest.raises(ReplyError, match="NOREPLICAS"):
        wire.parse_resp(bytearray(b"-NOREPLICAS Not enough good replicas\r\n"))
    with pytest.raises(ReplyError, match="not a RESP"):
        wire.parse_resp(bytearray(b"OK 5\r\n"))


def test_redis_wait_codec():
    codec = wire.RedisWaitCodec
    req = codec.encode_write([b"x"])
    assert req == wire.RedisCodec.encode_write([b"x"]) + wire.resp_command(b"WAIT", b"1", b"0")
    assert codec.replies_per_write(100) == 101
    buf = bytearray(b"$3\r\n1-0\r\n:1\r\n:")
    p = codec.parse_reply(buf, 0)
    assert p == 9
    assert codec.parse_reply(buf, p) == 13
    assert codec.parse_reply(buf, 13) == -1
    with pytest.raises(ReplyError, match="no replica"):
        codec.parse_reply(bytearray(b":0\r\n"), 0)


# -- lag ---------------------------------------------------------------------------------


def test_lag_in_ids_and_interpolated_ms():
    lag = replstats.Lag()
    lag.add(0.00, head=0, written=0)
    lag.add(0.05, head=1000, written=500)  # head reached 500 at ~0.025
    lag.add(0.10, head=2000, written=2000)  # caught up: 0
    lag.add(0.15, head=3000, written=1500)  # head reached 1500 at ~0.075
    assert lag.ids == [0, 500, 0, 1500]
    assert lag.ms == pytest.approx([0, 25, 0, 75])
    assert not lag.server_ms
    assert lag.reached_at(2500) == pytest.approx(0.125)
    assert lag.reached_at(3001) is None


def test_lag_idle_follower_caught_up_is_zero_and_head_never_goes_back():
    lag = replstats.Lag()
    lag.add(1.0, 10, 10)
    lag.add(2.0, 10, 10)  # nothing written for a second: still no lag
    lag.add(3.0, 9, 10)  # a stale sample cannot move the head back
    assert lag.ms == [0, 0, 0] and lag.heads == [10, 10, 10]


def test_lag_from_primary_when_it_reports_seconds():
    lag = replstats.Lag()
    lag.add(0.0, 100, 40, lag_seconds=0.012)
    assert lag.ms == [pytest.approx(12)] and lag.server_ms and lag.ids == [60]


# -- sendfile limit --------------------------------------------------------------------


def test_sendfile_rate_sends_every_byte(tmp_path):
    import replication

    paths = []
    for i, size in enumerate((0, 1, 300_000)):
        p = tmp_path / f"{i}.log"
        p.write_bytes(os.urandom(size))
        paths.append(str(p))
    r = replication.sendfile_rate(paths, rounds=1)
    assert r["bytes"] == 300_001 and r["mb_per_s"] > 0


# -- against real servers (skipped when missing) -------------------------------------------


class Args:
    tmp_dir = None
    logd_cmd = None
    follower_cmd = None
    logd_arg: list = []


PLAN = {"W1": {"msgs": 2000, "per_request": 100, "in_flight": 4}, "W2": {"requests": 30},
        "W5": {"rate": 500.0, "seconds": 0.5}, "W6": {"msgs": 3000}}


def _systems():
    out = []
    try:
        import logd.cli  # noqa: F401

        out.append("logd")
    except ImportError:
        pass
    import servers

    try:
        servers.redis_binary(install=False)
        out.append("redis")
    except servers.ServerError:
        pass
    return out


@pytest.mark.integration
@pytest.mark.parametrize("system", ["logd", "redis"])
def test_replication_workloads_run_and_stop_everything(system, tmp_path):
    if system not in _systems():
        pytest.skip(f"{system} not available")
    import replication

    args = Args()
    args.tmp_dir = str(tmp_path)
    live: list = []
    results = {w: replication.run(w, system, "interval", PLAN, args, live) for w in replication.WORKLOADS}
    assert live == []  # everything started was stopped
    assert os.listdir(tmp_path) == []  # and its directories removed
    for w, r in results.items():
        assert "error" not in r, (w, r)
        assert all(c["exit"] == 0 for c in r["exit_codes"].values()), (w, r["exit_codes"])
    w6 = results["W6"]
    # A copy this small can end within the poll that saw the follower start
    # (copy seconds 0, no rate: _w6_result); from the spawn it always takes time.
    assert w6["msgs"] == 3000 and w6["seconds"] >= 0 and w6["wall_s"] > 0
    if system == "logd":
        assert w6["verified"].startswith("sha256")
        if w6["seconds"] > 0:
            assert 0 < w6["fraction_of_sendfile"]
        else:
            assert math.isnan(w6["fraction_of_sendfile"])
        w7 = results["W7"]
        assert w7["msgs"] == 2000 and w7["without"]["msgs"] == 2000 and w7["lag_samples"] >= 1
        assert w7["lag_ms_method"] in ("sampled head history", "primary lag_seconds")
    else:
        assert w6["verified"] == "XLEN 3000 and last entry equal"
    assert results["W8"]["received"] == results["W8"]["sent"] == 250
    for w in ("W1m", "W2m"):
        r = results[w]
        if "unsupported" in r:  # logd before --min-acks lands
            assert system == "logd" and "--min-acks 1" in r["unsupported"]
        else:
            assert r["msgs"] == (2000 if w == "W1m" else 30)
