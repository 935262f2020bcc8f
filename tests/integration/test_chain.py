"""Chained followers: primary A -> follower B -> read replica R (on B's
directory) -> follower C. R serves REPLICATE; C ends sha256-equal to A and
keeps following new writes, across partition rolls."""

from __future__ import annotations

import pytest

from .test_connections import stats, wait_for
from .test_replication import SMALL, copies_equal, digests, meta_history, write_many

pytestmark = pytest.mark.integration


def test_a_follower_of_a_read_replica_equals_the_primary(logd_server, follower):
    a = logd_server(*SMALL)
    write_many(a, 600)
    b = follower(a.addr, "--fsync", "never", "--name", "b")
    wait_for(lambda: copies_equal(a.data_dir, b.data_dir), timeout=30, what="B caught up")
    r = logd_server("--refuse", data_dir=b.data_dir)
    c = follower(r.addr, "--fsync", "never", "--name", "c")
    wait_for(lambda: copies_equal(a.data_dir, c.data_dir), timeout=30, what="C caught up")
    assert len(digests(c.data_dir)) >= 4
    assert meta_history(c.data_dir) == meta_history(a.data_dir)
    write_many(a, 900, 600, 3)  # while the chain streams
    wait_for(lambda: copies_equal(a.data_dir, c.data_dir), timeout=30, what="C following")
    assert stats(r)["head"] == 1500
    assert stats(r)["replication_full_copies"] == 1
    def lines() -> list[str]:
        return [v for k, v in stats(r).items() if k.startswith("follower_") and k[9:].isdigit()]

    assert [line.split("name=")[1].split()[0] for line in lines()] == ["c"]
    wait_for(lambda: " lag_ids=0 lag_bytes=0 " in lines()[0], timeout=10, what="C at lag 0 on R")
    assert c.proc.poll() is None
    assert c.stop() == 0 and r.stop() == 0 and b.stop() == 0
