"""Epochs on the follower's side (issue 10) on real processes: the unplanned
failover (kill -9 the primary, ACCEPT its follower's replica), the old
primary's directory pointed at the new primary (DIVERGED, exit 11, naming the
epoch and id; ``--quarantine-diverged`` moves exactly the unreplicated
records aside and ends byte-identical), two servers both ACCEPTed never
following each other, and ``--min-acks 1`` losing no acknowledged message."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import logd
from logd.errors import LogdError
from logd.log.partition import parse_name
from logd.log.reader import LogReader

from .test_failover_commands import head_of, meta, wait_for, write

pytestmark = pytest.mark.integration

EXIT_DIVERGED = 11



def partitions(directory: Path) -> dict[str, str]:
    """sha256 of each partition file (not the quarantine files beside them)."""
    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest()
            for n in sorted(os.listdir(directory)) if parse_name(n) is not None}


def everything(directory: Path) -> dict[str, bytes]:
    return {n: (directory / n).read_bytes() for n in sorted(os.listdir(directory))
            if (directory / n).is_file() and n != "lock"}


def records(directory: Path) -> list[tuple[int, bytes]]:
    reader = LogReader(str(directory))
    try:
        return [(r.id, r.body) for r in reader.read(reader.first_id(), reader.head() + 1)]
    finally:
        reader.close()


def dump(path: Path) -> list[tuple[int, str]]:
    out = subprocess.run([sys.executable, "-m", "logd", "dump", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    got = []
    for line in out.stdout.splitlines():
        fields = dict(f.split("=", 1) for f in line.split(" ", 5) if "=" in f)
        got.append((int(fields["id"]), fields["body"]))
    return got


def unplanned(logd_server, follower, tmp_path: Path, k: int, *a_flags: str):
    """A (epoch 1) with follower F on B and a read replica on B; F is stopped
    (SIGSTOP) while A takes ``k`` more; kill -9 A; F stopped; B's replica
    ACCEPTed (epoch 2) and written to (ids 21..23). Returns (A, B's server)."""
    a = logd_server(*a_flags)
    write(a.addr, 20)
    b_dir = tmp_path / "b"
    f = follower(a.addr, "--fsync", "always", data_dir=b_dir)
    wait_for(lambda: head_of(b_dir) == 20, 30, "F to copy 20")
    b = logd_server("--refuse", data_dir=b_dir)
    assert f.proc is not None
    os.kill(f.proc.pid, signal.SIGSTOP)
    with logd.connect(a.addr) as client:
        for i in range(k):
            client.append(b"lost-%d" % i)
    a.kill()
    f.proc.kill()  # still stopped: what reached its socket since never gets written
    assert f.wait_exit(30) == -signal.SIGKILL
    assert head_of(b_dir) == 20
    with logd.connect(b.addr) as client:
        assert client.accept() == (2, 21, True)
        for i in range(3):
            client.append(b"on-b-%d" % i)
    return a, b


def test_the_old_primary_diverges_then_quarantines_exactly_the_unreplicated_records(
        logd_server, follower, tmp_path) -> None:
    a, b = unplanned(logd_server, follower, tmp_path, 5)
    before = everything(a.data_dir)
    old = follower(b.addr, data_dir=a.data_dir)
    assert old.wait_exit(30) == EXIT_DIVERGED
    div = old.events("diverged")[0]
    assert (div["epoch"], div["id"], div["head"]) == (1, 21, 25)
    stopped = old.events("follower_stopped")[-1]
    assert "the histories part at epoch 1 id 21" in stopped["reason"]
    assert "ids 21..25" in stopped["reason"]
    from logd.log import status as status_file
    st = status_file.load(str(a.data_dir))  # what a read replica on the directory reports
    assert st is not None and st.link == "stopped" and "the histories part at epoch 1 id 21" in st.reason
    after = everything(a.data_dir)
    after.pop("follower.status", None)
    before.pop("follower.status", None)
    assert {k: v for k, v in after.items() if k.endswith(".log")} == \
        {k: v for k, v in before.items() if k.endswith(".log")}  # the data kept, untouched
    assert meta(a.data_dir)["epochs"] == [[1, 1]]
    # With the flag: the five move aside, the copy is cut at 20 and follows B.
    again = follower(b.addr, "--quarantine-diverged", data_dir=a.data_dir)
    wait_for(lambda: head_of(a.data_dir) == 23, 30, "the old primary to follow B")
    quarantined = again.events("diverged_quarantined")[0]
    assert (quarantined["epoch"], quarantined["first_id"], quarantined["last_id"], quarantined["records"]) \
        == (1, 21, 25, 5)
    q = a.data_dir / "quarantine-1-21-25.log"
    assert quarantined["file"] == str(q)
    assert dump(q) == [(21 + i, repr(b"lost-%d" % i)) for i in range(5)]
    wait_for(lambda: partitions(a.data_dir) == partitions(b.data_dir), 30, "sha256-equal to B")
    assert records(a.data_dir)[20:] == [(21 + i, b"on-b-%d" % i) for i in range(3)]
    assert meta(a.data_dir)["epochs"] == [[1, 1], [2, 21]]  # B's history, adopted
    with logd.connect(b.addr) as client:
        client.append(b"more")
    wait_for(lambda: head_of(a.data_dir) == 24, 30, "and keeps following")
    assert again.proc is not None and again.proc.poll() is None


def test_a_follower_that_has_everything_follows_the_new_primary(logd_server, follower, tmp_path) -> None:
    a, b = unplanned(logd_server, follower, tmp_path, 0)
    old = follower(b.addr, data_dir=a.data_dir)  # A had nothing B lacks: no divergence
    wait_for(lambda: head_of(a.data_dir) == 23, 30, "the old primary to follow B")
    assert partitions(a.data_dir) == partitions(b.data_dir)
    assert not old.events("diverged") and not list(a.data_dir.glob("quarantine-*"))


def test_a_promoted_follower_starts_the_epoch_after_its_primarys_last(logd_server, follower, tmp_path) -> None:
    a = logd_server()
    write(a.addr, 4)
    with logd.connect(a.addr) as client:  # A is in epoch 3 now
        client.refuse()
        assert client.accept() == (2, 5, True)
        client.refuse()
        assert client.accept() == (3, 5, True)
        client.append(b"e3")
    f = follower(a.addr)
    wait_for(lambda: head_of(f.data_dir) == 5, 30, "the copy")
    wait_for(lambda: meta(f.data_dir)["epochs"] == [[1, 1], [2, 5], [3, 5]], 30, "A's epochs adopted")
    # A new epoch on the primary ends the streams: the follower learns it before its records.
    with logd.connect(a.addr) as client:
        client.refuse()
        assert client.accept() == (4, 6, True)
        client.append(b"e4")
    wait_for(lambda: head_of(f.data_dir) == 6, 30, "the epoch 4 record")
    assert meta(f.data_dir)["epochs"] == [[1, 1], [2, 5], [3, 5], [4, 6]]
    assert f.stop() == 0
    b = logd_server("--refuse", data_dir=f.data_dir)
    with logd.connect(b.addr) as client:
        assert client.accept() == (5, 7, True)  # not 2


def test_a_promoted_replicas_streams_end_so_its_followers_learn_the_new_epoch(
        logd_server, follower, tmp_path) -> None:
    a = logd_server()
    write(a.addr, 10)
    b_dir = tmp_path / "b"
    f = follower(a.addr, data_dir=b_dir)
    wait_for(lambda: head_of(b_dir) == 10, 30, "F's copy")
    r = logd_server("--refuse", data_dir=b_dir)
    g = follower(r.addr)  # chained: G copies B's directory through its read replica
    wait_for(lambda: head_of(g.data_dir) == 10, 30, "G's copy")
    assert f.stop() == 0
    with logd.connect(r.addr) as client:
        assert client.accept() == (2, 11, True)
        client.append(b"epoch-2")
    wait_for(lambda: head_of(g.data_dir) == 11, 30, "G to copy the epoch 2 record")
    assert r.events("replication_epoch_changed")  # G's stream ended before that record
    assert meta(g.data_dir)["epochs"] == [[1, 1], [2, 11]]
    assert g.proc is not None and g.proc.poll() is None


def test_two_accepted_servers_never_follow_each_other(logd_server, follower, tmp_path) -> None:
    a = logd_server()
    write(a.addr, 20)
    b_dir = tmp_path / "b"
    f = follower(a.addr, data_dir=b_dir)
    wait_for(lambda: head_of(b_dir) == 20, 30, "F to copy 20")
    assert f.stop() == 0
    b = logd_server("--refuse", data_dir=b_dir)
    with logd.connect(b.addr) as client:
        assert client.accept() == (2, 21, True)
        client.append(b"b21", b"b22", b"b23")
    write(a.addr, 2, tag="a")  # A still in epoch 1: ids 21, 22
    with logd.connect(a.addr) as client:
        client.refuse()
        assert client.accept() == (2, 23, True)  # the same epoch number, another first id
        client.append(b"a23")
    assert b.stop() == 0
    b_files = everything(b_dir)
    onto_a = follower(a.addr, data_dir=b_dir)
    assert onto_a.wait_exit(30) == EXIT_DIVERGED
    assert (onto_a.events("diverged")[0]["epoch"], onto_a.events("diverged")[0]["id"]) == (2, 21)
    assert a.stop() == 0
    b = logd_server(data_dir=b_dir)
    onto_b = follower(b.addr, data_dir=a.data_dir)
    assert onto_b.wait_exit(30) == EXIT_DIVERGED
    assert (onto_b.events("diverged")[0]["epoch"], onto_b.events("diverged")[0]["id"]) == (1, 21)
    assert {k: v for k, v in everything(b_dir).items() if parse_name(k)} == \
        {k: v for k, v in b_files.items() if parse_name(k)}
    with logd.connect(b.addr) as client:
        assert client.stats()["role"] == "primary"  # neither made the other refuse


def test_min_acks_1_unplanned_failover_loses_no_acknowledged_message(logd_server, follower, tmp_path) -> None:
    a = logd_server("--min-acks", "1", "--ack-timeout", "10")
    b_dir = tmp_path / "b"
    f = follower(a.addr, "--fsync", "always", data_dir=b_dir)
    f.wait_ready()
    acked: dict[int, bytes] = {}
    stop = threading.Event()

    def writer(tag: str) -> None:
        with logd.connect(a.addr) as client:
            i = 0
            while not stop.is_set():
                body = b"%s-%d" % (tag.encode(), i)
                try:
                    ids = client.append(body)
                except (LogdError, OSError):
                    return
                acked[ids.start] = body
                i += 1

    threads = [threading.Thread(target=writer, args=(f"w{n}",), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= 150, 60, "150 acknowledged MSGs")
    a.kill()  # mid-stream: some MSGs written on A and not acknowledged
    stop.set()
    for t in threads:
        t.join(30)
    assert f.stop() == 0
    b = logd_server("--refuse", data_dir=b_dir)
    with logd.connect(b.addr) as client:
        epoch, first, _ = client.accept()
    assert epoch == 2 and first - 1 >= max(acked)
    on_b = dict(records(b_dir))
    assert {i: on_b.get(i) for i in acked} == acked  # every OK'd id, with its body
