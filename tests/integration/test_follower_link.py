"""The link between primary and follower dropped repeatedly under load, by a
TCP proxy cut from the test (real sockets): the follower reconnects and
resumes from its own tail every time, and ends sha256-equal, with one copy."""

from __future__ import annotations

import threading

import pytest

from .proxy import Proxy
from .test_connections import stats, wait_for
from .test_replication import (SMALL, copies_equal, follower_lines, keep_writing, newest_stream_writing,
                               write_many)

pytestmark = pytest.mark.integration


def test_link_dropped_five_times_under_load_ends_equal(logd_server, follower):
    srv = logd_server(*SMALL)
    write_many(srv, 500)
    proxy = Proxy((srv.host, srv.port))
    f = follower(proxy.addr, "--fsync", "never", "--max-backoff", "0.3")
    stop = threading.Event()
    writer = threading.Thread(target=keep_writing, args=(srv, stop, 500))
    writer.start()
    try:
        for cut in range(5):
            wait_for(lambda: newest_stream_writing(srv, cut + 1) and len(follower_lines(stats(srv))) == 1, timeout=30, what=f"stream {cut + 1} writing")
            assert proxy.cut() == 1
    finally:
        stop.set()
        writer.join(60)
    try:
        wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=60, what="equal after cuts")
        # Equal can come before the last reconnection, when the cut came after the writes.
        wait_for(lambda: newest_stream_writing(srv, 6), timeout=30, what="the sixth stream")
        s = stats(srv)
        assert (s["replication_full_copies"], s["replication_partial_resumes"]) == (1, 5)
        assert proxy.accepted == 6
        wait_for(lambda: len(f.events("link_lost")) >= 5, timeout=10, what="5 link_lost lines")
        assert len(f.events("link_lost")) == 5 and f.proc.poll() is None
    finally:
        proxy.close()
    assert f.stop() == 0
