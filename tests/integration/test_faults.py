"""Fault tests of issue 4 against real ``logd serve`` processes, with exact outcomes.

- kill -9 under concurrent pipelined load (``--fsync always``), many rounds on one data dir;
- lost un-fsynced writes, simulated by cutting the active partition between the
  last fsynced offset (STATS) and its end, under each fsync policy;
- disk full on a real, small tmpfs, then space freed without a restart.

Expected bytes are built with ``logd.record.encode_batch`` (the same encoder the
server uses), so a check "the file / the READ stream is exactly these bytes" says
which ids exist with which bodies, and that every MSG is stored as one batch.
Every wait has a deadline and every loop a bound.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from logd import protocol
from logd.errors import LogdError
from logd.record import encode_batch, iter_records

from .wire import Wire, wire

pytestmark = pytest.mark.integration

# -- helpers ------------------------------------------------------------------------


def head(w: Wire) -> int:
    w.send(b"HEAD\r\n")
    line = w.line()
    assert line.startswith(b"OK "), line
    return int(line[3:-2])


def msg(w: Wire, *bodies: bytes) -> bytes:
    w.cmd("MSG", *bodies)
    return w.line()


def read_raw(w: Wire, start: int, limit: int, timeout: float = 30.0) -> bytes:
    """The record bytes of READ start limit (without OK / +EOF); limit must be > 0."""
    assert limit > 0
    w.cmd("READ", start, limit)
    assert w.line() == b"OK\r\n"
    deadline = time.monotonic() + timeout
    chunks = [w.buf]
    w.buf = b""
    tail = chunks[0][-8:]
    # Bodies in these tests never contain "+EOF", so the stream ends at the first one.
    while not (tail.endswith(b"\n+EOF\r\n") or (tail == b"+EOF\r\n")):
        left = deadline - time.monotonic()
        assert left > 0, f"READ {start} {limit} did not end within {timeout}s"
        w.sock.settimeout(left)
        try:
            chunk = w.sock.recv(1 << 20)
        except socket.timeout:
            continue
        assert chunk, "connection closed during READ"
        chunks.append(chunk)
        tail = (tail + chunk)[-8:]
    data = b"".join(chunks)
    assert data.endswith(b"+EOF\r\n")
    return data[: -len(b"+EOF\r\n")]


def batches_bytes(first_id: int, batches: list[list[bytes]]) -> bytes:
    """The exact log bytes of ``batches`` stored one after another from ``first_id``."""
    out = []
    i = first_id
    for bodies in batches:
        data, _ = encode_batch(i, bodies)
        out.append(data)
        i += len(bodies)
    return b"".join(out)


def partition_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in Path(data_dir).iterdir() if p.name.endswith(".log"))


# -- 1. kill -9 under load ------------------------------------------------------------


@dataclass
class Batch:
    round: int
    writer: int
    number: int
    bodies: list[bytes]
    ids: range | None = None  # set when acknowledged


@dataclass
class Acks:
    lock: threading.Condition = field(default_factory=threading.Condition)
    count: int = 0

    def add(self) -> None:
        with self.lock:
            self.count += 1
            self.lock.notify_all()

    def wait_for(self, n: int, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.count >= n, timeout)


class Writer(threading.Thread):
    """One connection pipelining MSG batches (up to ``window`` unanswered) until the
    server dies or the bounds are hit. Every batch is recorded *before* it is sent."""

    MAX_BATCHES = 200_000
    DEADLINE = 30.0

    def __init__(self, addr: tuple[str, int], round_: int, wid: int, seed: int, acks: Acks) -> None:
        super().__init__(daemon=True, name=f"writer-r{round_}-w{wid}")
        self.addr = addr
        self.round = round_
        self.wid = wid
        self.rng = random.Random(seed)
        self.window = self.rng.randint(1, 16)
        self.acks = acks
        self.batches: list[Batch] = []
        self.errors: list[str] = []
        self.connected = threading.Event()
        self.ended_by: str = ""

    def run(self) -> None:
        try:
            sock = socket.create_connection(self.addr, timeout=10.0)
        except OSError as exc:
            self.errors.append(f"connect: {exc}")
            return
        finally:
            self.connected.set()
        parser = protocol.ReplyParser()
        pending: deque[Batch] = deque()
        deadline = time.monotonic() + self.DEADLINE
        rng = self.rng
        try:
            while time.monotonic() < deadline:
                while len(pending) < self.window and len(self.batches) < self.MAX_BATCHES:
                    n = len(self.batches)
                    bodies = [
                        b"r%d-w%d-b%d-m%d|" % (self.round, self.wid, n, m) + b"x" * rng.randint(0, 300)
                        for m in range(rng.randint(1, 10))
                    ]
                    batch = Batch(self.round, self.wid, n, bodies)
                    self.batches.append(batch)
                    pending.append(batch)
                    sock.sendall(protocol.encode_command("MSG", *bodies))
                if not pending:
                    self.ended_by = "max batches"
                    return
                reply = parser.next_reply()
                while reply is protocol.NEED_DATA:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        self.ended_by = "closed"
                        return
                    parser.receive_data(chunk)
                    reply = parser.next_reply()
                batch = pending.popleft()
                assert isinstance(reply, protocol.OkId), reply
                last = reply.id
                batch.ids = range(last - len(batch.bodies) + 1, last + 1)
                self.acks.add()
            self.ended_by = "deadline"
        except LogdError as exc:
            self.errors.append(f"error reply: {exc!r}")
        except socket.timeout:
            self.ended_by = "deadline"
        except OSError as exc:
            self.ended_by = f"closed ({type(exc).__name__})"
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            sock.close()


class KillRounds:
    """State carried across rounds: the verified log, byte for byte."""

    def __init__(self, srv, seed: int, writers: int, full_every: int = 1) -> None:
        self.srv = srv
        self.full_every = full_every
        self.marks: list[tuple[int, int]] = []  # (head, bytes) after each round
        self.rng = random.Random(seed)
        self.writers = writers
        self.log_raw = b""  # exact bytes of ids 1..head, as READ streams them
        self.head = 0
        self.unacked_present = 0
        self.unacked_absent = 0
        self.truncations = 0

    def round(self, r: int) -> None:
        srv = self.srv
        acks = Acks()
        writers = [
            Writer((srv.host, srv.port), r, wid, self.rng.randrange(1 << 30), acks)
            for wid in range(self.writers)
        ]
        target = self.rng.randint(1, 600)
        for t in writers:
            t.start()
        for t in writers:  # every writer is connected before the kill can come
            assert t.connected.wait(10.0), f"{t.name} did not connect within 10s"
        reached = acks.wait_for(target, timeout=20.0)
        srv.kill()  # SIGKILL to the server's process group, while the writers are mid-flight
        for t in writers:
            t.join(10.0)
            assert not t.is_alive(), f"{t.name} did not stop within 10s of the kill"
        for t in writers:
            assert not t.errors, (t.name, t.errors)
        assert reached, f"round {r}: only {acks.count} of {target} batches acknowledged within 20s"

        before = len(srv.events("tail_truncated"))
        srv.start()  # same data dir; waits for this process's listening line
        self.truncations += len(srv.events("tail_truncated")) - before
        self.verify(r, [b for t in writers for b in t.batches], full=r % self.full_every == 0)

    def verify(self, r: int, sent: list[Batch], full: bool) -> None:
        w = wire(self.srv, timeout=30.0)
        h = head(w)
        assert h >= self.head, f"round {r}: head went back from {self.head} to {h}"
        # Read the whole log, or (long runs) from where it stood three rounds ago.
        h0, off0 = (0, 0) if full or len(self.marks) < 3 else self.marks[-3]
        raw = self.log_raw[:off0] + (read_raw(w, h0 + 1, h - h0) if h > h0 else b"")
        # Everything verified in earlier rounds is still there, byte for byte.
        assert raw[: len(self.log_raw)] == self.log_raw, f"round {r}: earlier log changed"
        new = raw[len(self.log_raw) :]

        by_first_body = {b.bodies[0]: b for b in sent}
        # The new part must be whole batches of this round, each once, with consecutive ids.
        records = [rec for _, rec in iter_records(new)]  # verifies every crc, no torn record
        ids = [rec.id for rec in records]
        assert ids == list(range(self.head + 1, h + 1)), f"round {r}: ids not contiguous"
        present: list[Batch] = []
        seen: set[int] = set()
        i = 0
        while i < len(records):
            batch = by_first_body.get(records[i].body)
            assert batch is not None, (
                f"round {r}: id {records[i].id} holds {records[i].body[:40]!r}, "
                "which is not the first message of a batch sent this round"
            )
            assert id(batch) not in seen, f"round {r}: batch {batch.writer}/{batch.number} stored twice"
            seen.add(id(batch))
            got = [rec.body for rec in records[i : i + len(batch.bodies)]]
            assert got == batch.bodies, (
                f"round {r}: batch {batch.writer}/{batch.number} is not whole from id {records[i].id}"
            )
            if batch.ids is not None:
                assert ids[i] == batch.ids[0], (
                    f"round {r}: acknowledged batch {batch.writer}/{batch.number} was given ids "
                    f"{batch.ids}, found at {ids[i]}"
                )
            present.append(batch)
            i += len(batch.bodies)
        # Exact bytes: every stored MSG is one batch as the server encodes it.
        assert new == batches_bytes(self.head + 1, [b.bodies for b in present])

        acked = [b for b in sent if b.ids is not None]
        present_ids = seen
        for b in acked:
            assert id(b) in present_ids, (
                f"round {r}: acknowledged batch {b.writer}/{b.number} (ids {b.ids}) is lost"
            )
        unacked = [b for b in sent if b.ids is None]
        self.unacked_present += sum(1 for b in unacked if id(b) in present_ids)
        self.unacked_absent += sum(1 for b in unacked if id(b) not in present_ids)
        # Per writer, a connection's batches are applied in order: the present ones
        # are a prefix of what it sent.
        for wid in {b.writer for b in sent}:
            mine = [b for b in sent if b.writer == wid]
            flags = [id(b) in present_ids for b in mine]
            assert flags == sorted(flags, reverse=True), f"round {r}: writer {wid} has a hole"

        # The next MSG gets head + 1.
        probe = b"r%d-probe" % r
        assert msg(w, probe) == b"OK %d\r\n" % (h + 1)
        assert read_raw(w, h + 1, 1) == batches_bytes(h + 1, [[probe]])
        w.close()
        self.log_raw = raw + batches_bytes(h + 1, [[probe]])
        self.head = h + 1
        self.marks.append((self.head, len(self.log_raw)))


def run_kill_rounds(logd_server, rounds: int, writers: int, seed: int, full_every: int = 1) -> KillRounds:
    srv = logd_server("--fsync", "always", "--partition-size", "256KiB", "--index-interval", "1024")
    state = KillRounds(srv, seed, writers, full_every)
    for r in range(1, rounds + 1):
        state.round(r)
    if rounds % full_every:
        w = wire(srv, timeout=60.0)
        assert read_raw(w, 1, state.head, timeout=60.0) == state.log_raw
        w.close()
    # Across all rounds the kills must have caught batches in flight.
    assert state.unacked_present + state.unacked_absent > 0
    assert len(partition_files(srv.data_dir)) > 1, "the log never rolled a partition"
    return state


def test_kill9_under_load_fsync_always(logd_server):
    """40 rounds of: 6 writers pipelining batches (1-10 messages each, up to 16
    unanswered per connection), SIGKILL when a random number (1-600) of batches
    has been acknowledged, restart on the same data dir, verify the whole log
    (see ``KillRounds.verify``), and check the next MSG gets head + 1. Small
    partitions make the log roll many times across the rounds."""
    run_kill_rounds(logd_server, rounds=40, writers=6, seed=4)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill9_under_load_fsync_always_long(logd_server):
    """The long version: 250 rounds, 8 writers; the whole log is read back every
    10th round and at the end, the last three rounds' worth in between."""
    run_kill_rounds(logd_server, rounds=250, writers=8, seed=44, full_every=10)


# -- 2. lost un-fsynced writes ----------------------------------------------------------


def write_batches(w: Wire, rng: random.Random, tag: bytes, first_id: int, count: int) -> list[list[bytes]]:
    out = []
    i = first_id
    for n in range(count):
        bodies = [b"%s-b%d-m%d|" % (tag, n, m) + b"y" * rng.randint(0, 200) for m in range(rng.randint(1, 6))]
        i += len(bodies)
        assert msg(w, *bodies) == b"OK %d\r\n" % (i - 1)
        out.append(bodies)
    return out


@pytest.mark.parametrize("policy", ["always", "interval:60000", "never"])
def test_lost_unsynced_writes_lose_a_suffix_only(logd_server, tmp_path, policy):
    """Write, restart cleanly (a known fsynced point), write more, read STATS'
    synced position, kill -9, then for several seeded cut points between the synced
    offset and the end of the active partition: copy the data dir, cut the file
    there (what a power loss can do to un-fsynced bytes), start a server on it, and
    check the ids that survive: exactly the whole MSGs before the cut."""
    rng = random.Random(f"lost-{policy}")
    srv = logd_server("--fsync", policy)
    w = wire(srv)
    batches = write_batches(w, rng, b"a", 1, 20)
    w.close()
    assert srv.stop() == 0  # SIGTERM: fsync + clean marker; the synced offset starts at the file size
    srv.start()
    w = wire(srv)
    (part,) = partition_files(srv.data_dir)
    size_a = part.stat().st_size
    st = w.stats()
    assert (st["synced_partition"], st["synced_offset"]) == (1, size_a), st
    n_a = sum(len(b) for b in batches)
    batches += write_batches(w, rng, b"b", n_a + 1, 30)
    total = sum(len(b) for b in batches)
    st = w.stats()
    assert st["head"] == total and st["fsync_policy"] == policy, st
    srv.kill()
    expected = batches_bytes(1, batches)
    assert part.read_bytes() == expected, "the partition is not exactly the acknowledged records"
    size = len(expected)
    assert st["synced_partition"] == 1
    synced = st["synced_offset"]
    if policy == "always":
        # Every acknowledged MSG is covered by the last fsync.
        assert (synced, st["synced_head"]) == (size, total), st
    else:
        # Nothing fsynced since the restart: the synced offset stayed behind.
        assert (synced, st["synced_head"]) == (size_a, n_a), st

    # Batch boundaries: (offset after the batch, ids so far).
    ends = []
    off, n = 0, 0
    for bodies in batches:
        data, _ = encode_batch(n + 1, bodies)
        off += len(data)
        n += len(bodies)
        ends.append((off, n))
    cuts = {synced, size}
    while len(cuts) < (1 if policy == "always" else 8):
        cuts.add(rng.randint(synced, size))
    snapshot = tmp_path / "snapshot"
    shutil.copytree(srv.data_dir, snapshot)
    for cut in sorted(cuts):
        d = tmp_path / f"cut-{cut}"
        shutil.copytree(snapshot, d)
        with open(d / part.name, "r+b") as f:
            f.truncate(cut)
        keep, k = max(((e, n) for e, n in ends if e <= cut), default=(0, 0))
        s2 = logd_server("--fsync", policy, data_dir=d)
        w2 = wire(s2)
        where = f"cut at {cut} (synced {synced}, size {size}, whole MSGs end at {keep}, id {k})"
        assert k >= n_a, where  # what was fsynced survives
        assert head(w2) == k, where
        # The file is cut back to the end of the last whole MSG.
        assert (d / part.name).read_bytes() == expected[:keep], where
        cut_events = s2.events("tail_truncated")
        if cut == keep:
            assert cut_events == [], where
            assert not list(d.glob("*.trunc.*")), where
        else:
            assert len(cut_events) == 1, (where, cut_events)
            ev = cut_events[0]
            assert (ev["partition"], ev["offset"], ev["bytes_dropped"]) == (1, keep, cut - keep), (where, ev)
            # The dropped bytes are copied aside to <partition>.trunc.N first.
            (aside,) = d.glob(part.name + ".trunc.*")
            assert aside.read_bytes() == expected[keep:cut], where
        if k:
            assert read_raw(w2, 1, k) == expected[:keep], where
        if policy == "always":
            assert k == total, where
        # The next MSG gets k + 1, and is stored right after id k.
        assert msg(w2, b"after-cut") == b"OK %d\r\n" % (k + 1), where
        assert read_raw(w2, k + 1, 1) == batches_bytes(k + 1, [[b"after-cut"]]), where
        w2.close()
        assert s2.stop() == 0
        assert (d / part.name).read_bytes() == expected[:keep] + batches_bytes(k + 1, [[b"after-cut"]])


# -- 3. disk full --------------------------------------------------------------------------

TMPFS_SIZE = "2m"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs mounted on a fresh directory; unmounted at teardown."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        res = subprocess.run(["umount", str(mnt)], capture_output=True, text=True, timeout=20)
        if res.returncode != 0:  # still busy (a server that did not die): detach it lazily
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


@pytest.mark.parametrize("policy", ["always", "never"])
def test_disk_full_on_a_real_filesystem(small_tmpfs, logd_server, policy):
    """Disk full against a real full filesystem, then recovery without a restart.

    Setup: a fresh 2 MiB tmpfs (``mount -t tmpfs -o size=2m tmpfs <tmp dir>``, run as
    root; the test is skipped when the mount fails) holds both the server's data dir
    and a 512 KiB filler file written before the server starts. MSGs of 3 bodies of
    6-20 KiB fill the remaining space until one gets ``ERR DISKFULL``; such a write
    fails part way (tmpfs writes what fits, then ENOSPC), so the server must cut
    it back. Deleting the filler frees space on the same filesystem.
    """
    rng = random.Random(f"full-{policy}")
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (512 * 1024))
    data_dir = small_tmpfs / "data"
    srv = logd_server("--fsync", policy, data_dir=data_dir)
    w = wire(srv)
    batches: list[list[bytes]] = []
    n = 0
    failed_with = b""
    pending: list[bytes] = []
    free_before = -1
    for b in range(400):  # 2 MiB / (3 x 6 KiB) bounds it well below 400
        pending = [b"full-b%d-m%d|" % (b, m) + bytes([65 + m]) * rng.randint(6000, 20000) for m in range(3)]
        vfs = os.statvfs(small_tmpfs)
        free_before = vfs.f_bavail * vfs.f_frsize
        reply = msg(w, *pending)
        if reply != b"OK %d\r\n" % (n + 3):
            failed_with = reply
            break
        batches.append(pending)
        n += 3
    assert failed_with.startswith(b"ERR DISKFULL "), (n, failed_with)
    # With these seeds part of the failing MSG fits (about 32-36 KiB of 47-50 KiB free):
    # the write fails part way and the server has to cut it back.
    assert n > 0 and free_before > 0, (n, free_before)

    # No id assigned, nothing partial on disk.
    expected = batches_bytes(1, batches)
    assert head(w) == n
    (part,) = partition_files(data_dir)
    on_disk = part.read_bytes()
    assert [rec.id for _, rec in iter_records(on_disk)] == list(range(1, n + 1))
    assert on_disk == expected, f"partition is {len(on_disk)} bytes, the {n} acknowledged records are {len(expected)}"
    # Still full: the same MSG fails the same way, again with nothing left behind.
    assert msg(w, *pending).startswith(b"ERR DISKFULL ")
    assert head(w) == n
    assert part.read_bytes() == expected

    # Everything else keeps working.
    w.send(b"PING\r\n")
    assert w.line() == b"PONG\r\n"
    assert read_raw(w, 1, n) == expected
    st = w.stats()
    assert st["head"] == n and st["failed"] == "", st
    assert st["write_error"] != "" and "ENOSPC" in st["write_error"], st
    assert st["write_errors"] >= 2, st
    other = wire(srv)  # new connections are accepted too
    assert head(other) == n
    other.close()

    # Free space on the same filesystem; the next MSG succeeds, no restart.
    filler.unlink()
    assert msg(w, *pending) == b"OK %d\r\n" % (n + 3)
    batches.append(pending)
    assert msg(w, b"after-full") == b"OK %d\r\n" % (n + 4)
    batches.append([b"after-full"])
    expected = batches_bytes(1, batches)
    assert read_raw(w, 1, n + 4) == expected
    assert part.read_bytes() == expected
    assert srv.proc.poll() is None and len(srv.events("listening")) == 1
    w.close()
    assert srv.stop() == 0
