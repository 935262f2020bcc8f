"""The primary's STATS per follower: lag in ids, bytes and seconds, for a
stalled follower (a raw REPLICATE that never ACKs) and a live one."""

from __future__ import annotations


import pytest

from logd.protocol import encode_command
from logd.protocol import replication as rp

from .test_connections import stats, wait_for
from .test_replication import SMALL, copies_equal, follower_lines, write_many

pytestmark = pytest.mark.integration


def by_name(srv) -> dict[str, dict[str, str]]:
    out = {}
    for line in follower_lines(stats(srv)):
        words = dict(w.split("=", 1) for w in line.split() if "=" in w)
        out[words["name"]] = words
    return out


def total_bytes(directory) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.name.endswith(".log"))


def test_a_stalled_follower_shows_growing_lag_and_a_live_one_none(logd_server, follower):
    srv = logd_server(*SMALL)
    write_many(srv, 100)
    live = follower(srv.addr, "--fsync", "never", "--name", "live")
    stalled = srv.connect()
    hello = rp.encode_follower_hello(rp.FollowerHello(None, 0, 0, "stalled"))
    stalled.sendall(encode_command("REPLICATE", 0, 0, 0, hello))  # and never an ACK
    first = wait_for(lambda: (f := by_name(srv)).keys() == {"live", "stalled"} and f, timeout=30,
                     what="both followers listed")
    s = first["stalled"]
    assert int(s["lag_ids"]) == 100 and int(s["lag_bytes"]) == total_bytes(srv.data_dir)
    age1 = float(s["lag_seconds"])
    assert age1 > 0
    # Lag in seconds is an age: it grows while the stalled follower takes nothing.
    wait_for(lambda: float(by_name(srv)["stalled"]["lag_seconds"]) >= age1 + 1.0, timeout=30,
             what="the stalled follower's lag to age by a second")
    write_many(srv, 50, 100)
    wait_for(lambda: copies_equal(srv.data_dir, live.data_dir), timeout=30, what="live copy")
    later = wait_for(lambda: (f := by_name(srv))["live"]["lag_ids"] == "0" and f, timeout=30,
                     what="live follower at lag 0")
    s = later["stalled"]
    assert int(s["lag_ids"]) == 150 and int(s["lag_bytes"]) == total_bytes(srv.data_dir)
    assert float(s["lag_seconds"]) >= age1 + 1.0
    assert (later["live"]["lag_bytes"], later["live"]["lag_seconds"]) == ("0", "0.000")
    stalled.close()
    assert live.stop() == 0
