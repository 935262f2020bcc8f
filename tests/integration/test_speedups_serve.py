"""``logd serve`` and ``logd-follower`` say which implementation runs (native
or pure Python) in their start-up line, and the server in STATS ``native``;
``LOGD_PURE=1`` makes a server with the extension built run pure Python,
and a follower copies that primary's log (verified natively when built)."""

from __future__ import annotations

import pytest

from logd import speedups
from tests.integration.test_connections import wait_for
from tests.integration.test_replication import copies_equal
from tests.integration.wire import wire

pytestmark = pytest.mark.integration


def test_serve_logs_and_reports_the_implementation(logd_server, follower) -> None:
    built = speedups.native is not None
    srv = logd_server(env={"LOGD_PURE": "1"})
    assert srv.wait_event("listening")["speedups"] == "pure"
    w = wire(srv)
    for n in range(20):
        w.cmd("MSG", *[b"m%d-%d" % (n, i) for i in range(50)])
        assert w.line() == b"OK %d\r\n" % (50 * n + 50)
    assert w.stats()["native"] == 0
    w.close()
    f = follower(srv.addr)
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    started = f.events("follower_started")
    assert started and started[0]["speedups"] == ("native" if built else "pure")
    if not built:
        return
    native = logd_server()
    assert native.wait_event("listening")["speedups"] == "native"
    w = wire(native)
    assert w.stats()["native"] == 1
    w.close()
