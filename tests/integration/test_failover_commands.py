"""Issue 10, the server side: REFUSE and ACCEPT on real ``logd serve`` processes.

A primary refuses (naming the new primary), its follower still reaches the
final id, the role survives SIGTERM and kill -9, ACCEPT starts a new epoch;
a read replica over a follower's directory is promoted once the follower
has stopped (and not while it holds the lock), its tail reader kept.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import logd
from logd.errors import Refused, StorageError
from logd.log.reader import LogReader

from .test_connections import wait_for
from .wire import Wire

pytestmark = pytest.mark.integration


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os
    return subprocess.run([sys.executable, "-m", "logd", *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, **(env or {})})


def head_of(directory: Path) -> int:
    if not (directory / "meta").exists():  # the follower has not made its copy yet
        return -1
    reader = LogReader(str(directory))
    try:
        return reader.head()
    finally:
        reader.close()


def record_ids(stream: bytes) -> list[int]:
    """The ids of the READ record headers (``+<id> <len> <more> <crc>``) in ``stream``."""
    return [int(m) for m in re.findall(rb"^\+(\d+) \d+ \d+ [0-9a-f]{8}\r$", stream, re.M)]


def meta(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "meta").read_text())


def write(addr: str, n: int, tag: str = "m") -> list[int]:
    with logd.connect(addr) as client:
        return [client.append(f"{tag}{i}".encode()) for i in range(n)]


def test_refuse_names_the_new_primary_fsyncs_and_the_follower_reaches_the_final_id(
        logd_server, follower) -> None:
    srv = logd_server("--fsync", "interval:1000")  # REFUSE fsyncs whatever the policy
    write(srv.addr, 50)
    f = follower(srv.addr, "--fsync", "never")
    wait_for(lambda: head_of(f.data_dir) == 50, 30, "the follower to catch up")
    write(srv.addr, 25)  # the follower is streaming these as REFUSE arrives
    out = cli("refuse", "-H", srv.addr, "--new-primary", "10.1.2.3:1774")
    assert (out.returncode, out.stdout, out.stderr) == (0, "75\n", "")
    assert meta(srv.data_dir)["role"] == "refusing" and meta(srv.data_dir)["primary"] == "10.1.2.3:1774"
    w = Wire(srv.host, srv.port)
    w.cmd("MSG", b"late")
    line = w.read_until(b"\r\n")
    assert line == (b"ERR_CLIENT REFUSED this server refuses writes (REFUSE from 127.0.0.1:"
                    + line.split(b"127.0.0.1:")[1].split(b")")[0]
                    + b"); send writes to the new primary (primary=10.1.2.3:1774)\r\n")
    with logd.connect(srv.addr) as client:
        with pytest.raises(Refused) as info:
            client.append(b"late")
        assert info.value.primary == "10.1.2.3:1774"
        assert client.head() == 75
        assert client.refuse() == 75  # idempotent: the same final id
        st = client.stats()
    assert (st["role"], st["epoch"], st["new_primary"], st["head"], st["synced_head"]) == (
        "refusing", 1, "10.1.2.3:1774", 75, 75)
    assert st["cmd_msg_errors"] == 2
    # A bare REFUSE leaves the follower streaming: it reaches the final id.
    wait_for(lambda: head_of(f.data_dir) == 75, 30, "the follower to reach the final id")
    assert f.proc is not None and f.proc.poll() is None
    assert srv.wait_event("refusing_writes")["new_primary"] == "10.1.2.3:1774"


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_a_refusing_server_comes_back_refusing_until_accept(logd_server, how: str) -> None:
    srv = logd_server()
    write(srv.addr, 10)
    with logd.connect(srv.addr) as client:
        assert client.refuse("h2:1774") == 10
    if how == "SIGTERM":
        assert srv.stop() == 0
    else:
        srv.kill()
    srv.start()
    started = srv.wait_event("starting_refusing")
    assert started["new_primary"] == "h2:1774" and started["epoch"] == 1
    assert srv.wait_event("listening")["role"] == "refusing"
    with logd.connect(srv.addr) as client:
        with pytest.raises(Refused) as info:
            client.append(b"x")
        assert info.value.primary == "h2:1774"
        st = client.stats()
        assert (st["role"], st["head"], st["epoch"]) == ("refusing", 10, 1)
        assert "a REFUSE before the last start" in st["refusing_reason"]
        assert client.accept() == (2, 11, True)
        assert client.accept() == (2, 11, False)
        assert client.append(b"y") == range(11, 12)
        assert client.stats()["role"] == "primary"
    assert meta(srv.data_dir)["epochs"] == [[1, 1], [2, 11]]
    out = cli("accept", "-H", srv.addr)
    assert (out.returncode, out.stdout) == (0, "already primary epoch=2 first=11\n")


def test_accept_promotes_a_read_replica_once_its_follower_is_stopped(logd_server, follower) -> None:
    primary = logd_server()
    write(primary.addr, 20)
    f = follower(primary.addr, "--fsync", "never")
    wait_for(lambda: head_of(f.data_dir) == 20, 30, "the follower to catch up")
    replica = logd_server("--refuse", data_dir=f.data_dir)
    # A tail reader on the replica, from the start: it must keep going across the promotion.
    tail = Wire(replica.host, replica.port)
    tail.cmd("READ", 1, 0)
    got = tail.read_until(b"m19\r\n")
    assert record_ids(got) == list(range(1, 21))
    before = (f.data_dir / "meta").read_bytes()
    out = cli("accept", "-H", replica.addr)
    assert out.returncode == 1
    assert "is in use by pid" in out.stderr and "logd-follower" in out.stderr, out.stderr
    assert (f.data_dir / "meta").read_bytes() == before  # nothing changed
    with logd.connect(replica.addr) as client:
        with pytest.raises(StorageError, match="stop it first"):
            client.accept()
        st = client.stats()
        assert (st["role"], st["epoch"], st["epochs"]) == ("replica", 1, "1:1")
        with pytest.raises(Refused):
            client.append(b"no")
    write(primary.addr, 5, tag="late")  # the follower copies these before it stops
    wait_for(lambda: head_of(f.data_dir) == 25, 30, "the follower to copy the last five")
    assert f.stop() == 0
    with logd.connect(replica.addr) as client:
        assert client.accept() == (2, 26, True)
        assert client.append(b"promoted") == range(26, 27)
        st = client.stats()
        assert (st["role"], st["epoch"], st["epochs"], st["head"]) == ("primary", 2, "1:1 2:26", 26)
    doc = meta(f.data_dir)
    assert (doc["role"], doc["epochs"]) == ("primary", [[1, 1], [2, 26]])
    # The tail connected before the promotion gets the follower's last records and the new one.
    rest = tail.read_until(b"promoted\r\n")
    assert record_ids(rest) == list(range(21, 27)) and b"late4\r\n" in rest
    assert replica.events("replica_promoted")
    tail.sock.close()


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_refuse_answers_after_every_msg_before_it_and_refuses_every_msg_after(logd_server, fsync) -> None:
    """One pipeline: 200 MSGs, REFUSE, 3 MSGs. The queue is in order, so REFUSE's
    final id is the last MSG's, all three after it are refused, and (whatever
    --fsync says) the final id is fsynced when REFUSE answers."""
    srv = logd_server("--fsync", fsync)
    other = Wire(srv.host, srv.port)
    other.cmd("MSG", b"from another connection")
    assert other.read_until(b"\r\n") == b"OK 1\r\n"
    w = Wire(srv.host, srv.port)
    pipeline = b"".join(protocol_msg(b"p%d" % i) for i in range(200))
    w.send(pipeline + b"REFUSE\r\n" + protocol_msg(b"late") * 3)
    replies = [w.read_until(b"\r\n") for _ in range(204)]
    assert replies[:200] == [b"OK %d\r\n" % i for i in range(2, 202)]
    assert replies[200] == b"OK 201\r\n"
    assert all(r.startswith(b"ERR_CLIENT REFUSED this server refuses writes") for r in replies[201:])
    st = w.stats()
    assert (st["head"], st["synced_head"], st["role"]) == (201, 201, "refusing")
    srv.kill()  # no clean stop: what REFUSE acknowledged is on disk all the same
    assert head_of(srv.data_dir) == 201


def protocol_msg(body: bytes) -> bytes:
    from logd.protocol import encode_command
    return encode_command("MSG", body)


def test_a_follower_reporting_a_higher_epoch_makes_the_primary_refuse(logd_server) -> None:
    from logd.protocol import replication as rp

    srv = logd_server()
    write(srv.addr, 3)
    hello = rp.encode_follower_hello(rp.FollowerHello(None, 0, 0, "newer", ((1, 1), (2, 4))))
    w = Wire(srv.host, srv.port)
    w.cmd("REPLICATE", 0, 0, 0, hello)
    line = w.read_until(b"\r\n")
    assert line.startswith(b"ERR_CLIENT REFUSED this server is in epoch 1 and the peer in epoch 2"), line
    w.cmd("MSG", b"x")
    assert b"epoch 2 seen from 127.0.0.1:" in w.read_until(b"\r\n")
    st = w.stats()
    assert st["role"] == "refusing" and st["higher_epoch_seen"].startswith("2 from 127.0.0.1:")
    seen = srv.wait_event("higher_epoch_seen")
    assert (seen["epoch"], seen["peer_epoch"]) == (1, 2)
    assert meta(srv.data_dir)["role"] == "refusing"
    # A follower in the same epoch is still served up to the final id (a refusing
    # primary keeps its followers), then told: +REFUSED, no successor named.
    same = rp.encode_follower_hello(rp.FollowerHello(None, 0, 0, "same", ((1, 1),)))
    w2 = Wire(srv.host, srv.port)
    w2.cmd("REPLICATE", 0, 0, 0, same)
    assert w2.read_until(b"\r\n").startswith(b"OK ")
    assert w2.read_until(b"+REFUSED 3 -\r\n").endswith(b"m2\r\n+REFUSED 3 -\r\n")
