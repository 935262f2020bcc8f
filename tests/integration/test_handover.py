"""The planned failover's fence (issue 10, /work/p2-contract.md) on real processes:
``REFUSE 0 B`` on primary A ends A's streams with ``+REFUSED <final> B``; the
follower writing B's directory (``--advertise`` = B's read replica) fsyncs the
final id and exits 0, handed over, releasing the writer lock, so B's replica
ACCEPTs; another follower of A follows B from then on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

import logd
from logd.errors import Refused

from .test_failover_commands import head_of, meta, write
from .test_replication import digests

pytestmark = pytest.mark.integration


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def bodies(directory: Path, first: int, end: int) -> list[bytes]:
    from logd.log.reader import LogReader
    reader = LogReader(str(directory))
    try:
        return [r.body for r in reader.read(first, end)]
    finally:
        reader.close()


def test_refuse_naming_b_hands_over_to_bs_replica_and_other_followers_follow_b(
        logd_server, follower, tmp_path) -> None:
    a = logd_server()
    write(a.addr, 30)
    b_dir = tmp_path / "b"
    seed = follower(a.addr, data_dir=b_dir)  # makes B's copy, so that its replica can start
    wait_for(lambda: head_of(b_dir) == 30, 30, "B's copy")
    assert seed.stop() == 0
    replica = logd_server("--refuse", data_dir=b_dir)
    f = follower(a.addr, "--advertise", replica.addr, data_dir=b_dir)
    g = follower(a.addr, "--fsync", "never")
    write(a.addr, 20, tag="n")  # both are streaming these
    wait_for(lambda: head_of(b_dir) == 50 and head_of(g.data_dir) == 50, 30, "both followers at 50")
    hello_names = [line for k, line in _stats(a).items() if k.startswith("follower_")]
    assert len(hello_names) == 2
    write(a.addr, 7, tag="last")  # in flight as REFUSE comes
    with logd.connect(a.addr) as client:
        final = client.refuse(replica.addr)
    assert final == 57
    # F: everything to the final id, fsynced, then exit 0 "handed over".
    assert f.wait_exit(30) == 0
    stopped = f.events("follower_stopped")[-1]
    assert stopped["exit_status"] == 0
    assert stopped["reason"] == (f"handed over: primary {a.addr} refused and named this copy's server "
                                 "as the new primary")
    assert f.events("handed_over")[0]["final_id"] == 57
    assert head_of(b_dir) == 57
    assert digests(b_dir) == digests(a.data_dir)  # sha256-equal to A, to the byte
    # The fence: the lock is free, B's replica ACCEPTs, epoch 2 from final + 1.
    with logd.connect(replica.addr) as client:
        assert client.accept() == (2, 58, True)
        assert [client.append(b"on-b-%d" % i).start for i in range(5)] == list(range(58, 63))
    assert meta(b_dir)["epochs"] == [[1, 1], [2, 58]]
    # G was not named: it follows B (the successor A named) and gets B's new writes.
    wait_for(lambda: head_of(g.data_dir) == 62, 30, "G to follow B's new writes")
    assert g.proc is not None and g.proc.poll() is None
    assert bodies(g.data_dir, 56, 63) == [b"last5", b"last6"] + [b"on-b-%d" % i for i in range(5)]
    assert digests(g.data_dir) == digests(b_dir)
    assert any(e.get("new_primary") == replica.addr for e in g.events("primary_refused"))
    # A keeps refusing and names B.
    with logd.connect(a.addr) as client:
        with pytest.raises(Refused) as info:
            client.append(b"late")
    assert info.value.primary == replica.addr


def _stats(server) -> dict[str, Any]:
    with logd.connect(server.addr) as client:
        return dict(client.stats())


def test_refuse_without_successor_keeps_the_follower_retrying_and_saying_so(logd_server, follower) -> None:
    a = logd_server()
    write(a.addr, 5)
    f = follower(a.addr, "--fsync", "never")
    wait_for(lambda: head_of(f.data_dir) == 5, 30, "the copy")
    with logd.connect(a.addr) as client:
        assert client.refuse() == 5
    wait_for(lambda: f.events("primary_refused"), 30, "the follower to hear +REFUSED")
    assert f.events("primary_refused")[0]["new_primary"] is None
    wait_for(lambda: len(f.events("primary_refused")) >= 2, 30, "a retry, refused again")
    assert f.proc is not None and f.proc.poll() is None
    wait_for(lambda: any("primary refusing, no successor named" in t for t in f.notify.texts()), 30, "the STATUS")
    assert head_of(f.data_dir) == 5


def _dead_address() -> str:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize("how", ["comma list", "repeated flag"])
def test_several_primaries_are_tried_in_order(logd_server, follower, how: str) -> None:
    a = logd_server()
    write(a.addr, 8)
    dead = _dead_address()
    if how == "comma list":
        f = follower(f"{dead},{a.addr}", "--fsync", "never")
    else:
        f = follower(dead, "--primary", a.addr, "--fsync", "never")
    wait_for(lambda: head_of(f.data_dir) == 8, 30, "the copy from the second address")
    assert digests(f.data_dir) == digests(a.data_dir)
    tried = [e["primary"] for e in f.events("reconnecting")]
    assert tried[0] == a.addr  # after the dead one failed
