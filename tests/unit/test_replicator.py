"""The follower's pure decisions (follower/replicator.py), the writer's follower
side (FileLog.append_records, roll_to, adopt_history), and the primary's
handshake (Handlers.plan_replication) on a real FileLog."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from follower.replicator import (EXIT_DIVERGED, EXIT_NOTRETAINED, BadStream, Replicator, Roll,
                                 exit_for)
from logd import stats as st
from logd.config import FsyncPolicy
from logd.errors import Diverged, InvalidArgument, NotRetained, OutOfRange, ShuttingDown
from logd.events.handlers import FULL_COPIES, PARTIAL_RESUMES, Handlers, Peer, Replication
from logd.log.file import FileLog
from logd.log.meta import load as load_meta
from logd.protocol import Replicate
from logd.protocol import replication as rp
from logd.record import checksum, encode, encode_batch, iter_records


def _data(partition: int, offset: int, data: bytes, final: bool = True) -> rp.Data:
    return rp.Data(partition, offset, data, final)


def test_whole_msgs_are_written_byte_by_byte() -> None:
    raw = encode_batch(1, [b"a", b"bb", b"ccc"])[0] + encode(4, b"d")
    rep = Replicator(1, 0, 0)
    writes = []
    for i in range(len(raw)):
        w = rep.on_data(_data(1, i, raw[i : i + 1], final=i == len(raw) - 1))
        if w is not None:
            writes.append(w)
    assert b"".join(w.data for w in writes) == raw
    assert [w.first_id for w in writes] == [1, 4]  # only whole MSGs come out
    assert rep.position == (1, len(raw), 4)
    assert rep.last_crc == checksum(4, b"d")


def test_random_chunks() -> None:
    bodies = [bytes([i % 250]) * (i % 37 + 1) for i in range(200)]
    raw, sizes = encode_batch(1, bodies[:3])
    raw += b"".join(encode(i + 4, b) for i, b in enumerate(bodies[3:]))
    rng = random.Random(3)
    rep, pos, out = Replicator(2, 0, 0), 0, bytearray()
    while pos < len(raw):
        n = rng.randint(1, 300)
        w = rep.on_data(_data(2, pos, raw[pos : pos + n], final=pos + n >= len(raw)))
        pos += n
        if w is not None:
            out += w.data
            assert w.count == len(list(iter_records(w.data)))
    assert bytes(out) == raw and rep.last_id == 200


@pytest.mark.parametrize("damage", ["crc", "id", "msg", "frame_end", "place"])
def test_bad_streams_are_refused_before_writing(damage: str) -> None:
    good = encode(1, b"hello")
    rep = Replicator(1, 0, 0)
    if damage == "crc":
        bad = good.replace(b"hello", b"hellp")
    elif damage == "id":
        bad = good + encode(3, b"x")
    elif damage == "msg":
        bad = encode_batch(1, [b"a", b"b", b"c"])[0]
        bad = bad[: bad.index(b"+3 ")] + encode(3, b"c", more=1)
    elif damage == "frame_end":
        bad = encode_batch(1, [b"a", b"b"])[0][:-5]
    else:
        with pytest.raises(BadStream):
            rep.on_data(_data(1, 7, good))
        return
    with pytest.raises(BadStream) as info:
        rep.on_data(_data(1, 0, bad))
    assert info.value.partition == 1
    if damage in ("crc",):
        assert rep.position == (1, 0, 0)  # nothing of it handed out


def test_next_and_hello() -> None:
    rep = Replicator(1, 0, 0)
    with pytest.raises(BadStream):
        rep.on_next(rp.Next(2, 5))  # ids 1..4 never came
    rep.on_data(_data(1, 0, encode(1, b"a")))
    assert rep.on_next(rp.Next(2, 2)) == Roll(2, 2)
    assert rep.position == (2, 0, 1)
    fresh = Replicator(1, 0, 0)
    hello = rp.PrimaryHello(None, 90, 7, 50, 7, 0, 50, 50)
    assert fresh.on_hello(hello) == Roll(7, 50)  # a new copy starts at the first retained
    resuming = Replicator(3, 100, 20)
    with pytest.raises(BadStream):
        resuming.on_hello(rp.PrimaryHello(None, 90, 1, 1, 3, 0, 1, 1))


def test_exit_codes() -> None:
    assert exit_for(NotRetained("x", first=1, head=2)) == EXIT_NOTRETAINED == 10
    assert exit_for(Diverged("x")) == EXIT_DIVERGED == 11
    assert exit_for(ShuttingDown("x")) is None


# -- the writer's follower side ---------------------------------------------------------


def test_append_records_roll_to_and_adopt(tmp_path: Path) -> None:
    log = FileLog(str(tmp_path / "copy"), fsync=False)
    log.adopt_history("1b4e28ba-2fa1-4d2a-883f-0016d3cca427")
    log.roll_to(3, 10)  # an empty copy starts where the primary's retained log does
    data, sizes = encode_batch(10, [b"a", b"b"])
    assert log.index_due() == 0
    assert log.append_records(10, data, 2, (10, 0)) == 11
    assert log.index_due() == log.index_interval
    with pytest.raises(ValueError):
        log.append_records(13, encode(13, b"x"), 1, ())
    with pytest.raises(ValueError):  # an index entry not due yet: nothing written
        log.append_records(12, encode(12, b"x"), 1, (12, len(data)))
    assert log.head() == 11 and log.partitions()[-1].size == len(data)
    with pytest.raises(ValueError):
        log.roll_to(5, 12)
    log.roll_to(4, 12)
    with pytest.raises(ValueError):
        log.adopt_history("1b4e28ba-2fa1-4d2a-883f-0016d3cca427")
    log.close()
    names = sorted(n for n in os.listdir(tmp_path / "copy") if n.endswith(".log"))
    assert names == ["0000000003-00000000000000000010.log", "0000000004-00000000000000000012.log"]
    assert (tmp_path / "copy" / names[0]).read_bytes() == data
    meta = load_meta(str(tmp_path / "copy"))
    assert meta is not None and meta.role == "replica"
    again = FileLog(str(tmp_path / "copy"), fsync=False)
    # The empty partition 4 goes at open, as a crash's would: the follower
    # resumes at the end of 3, and the primary's +NEXT names 4 again.
    assert again.head() == 11 and [p.number for p in again.partitions()] == [3]
    again.roll_to(4, 12)
    again.close()


# -- the primary's handshake -------------------------------------------------------------


def _primary(tmp_path: Path) -> tuple[Handlers, FileLog]:
    log = FileLog(str(tmp_path / "primary"), partition_size=200, fsync=False)
    for i in range(20):
        log.append([b"message %d" % i, b"second"])
    return Handlers(log, FsyncPolicy.parse("never"), st.Stats()), log


PEER = Peer("127.0.0.1:9", True)


def _hello(log: FileLog, last_id: int, history: str | None = "") -> bytes:
    crc = 0
    if last_id:
        with log.cursor(last_id + 1) as c:
            h = c.header_before()
            assert h is not None
            crc = h.crc
    hist = log.meta.history if history == "" else history
    return rp.encode_follower_hello(rp.FollowerHello(hist, last_id, crc, "f"))


def test_handshake_anonymous_and_resume(tmp_path: Path) -> None:
    handlers, log = _primary(tmp_path)
    parts = log.partitions()
    assert len(parts) > 3
    rep = handlers.handle(Replicate(0, 0), PEER)
    assert isinstance(rep, Replication) and (rep.partition, rep.offset, rep.next_id) == (1, 0, 1)
    assert rep.follower is None
    p = parts[2]
    _, offset = log.locate(p.first_id + 2)
    rep = handlers.handle(Replicate(p.number, 0, offset, _hello(log, p.first_id + 1)), PEER)
    assert isinstance(rep, Replication) and rep.next_id == p.first_id + 2
    rep = handlers.handle(Replicate(1, 0, 0, _hello(log, 0, None)), PEER)
    assert isinstance(rep, Replication)
    assert handlers.stats.counters[PARTIAL_RESUMES] == 1 and handlers.stats.counters[FULL_COPIES] == 1
    # The end of a sealed partition is a valid place to resume: the stream goes on with the next.
    rep = handlers.handle(Replicate(p.number, 0, p.size, _hello(log, p.last_id)), PEER)
    assert isinstance(rep, Replication) and rep.next_id == p.last_id + 1
    log.close()


def test_handshake_refusals(tmp_path: Path) -> None:
    handlers, log = _primary(tmp_path)
    parts = log.partitions()
    last = parts[-1]
    other = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(Diverged, match="history differs"):
        handlers.handle(Replicate(1, 0, 0, _hello(log, 0, other)), PEER)
    with pytest.raises(Diverged, match="ahead"):
        handlers.handle(Replicate(last.number, 0, last.size + 10, _hello(log, last.last_id)), PEER)
    with pytest.raises(Diverged, match="ahead"):
        handlers.handle(Replicate(last.number + 1, 0, 0, _hello(log, last.last_id)), PEER)
    with pytest.raises(OutOfRange):
        handlers.handle(Replicate(last.number + 1, 0, 0), PEER)
    with pytest.raises(Diverged, match="last record"):  # its position says 3 ids, it claims 1
        _, offset = log.locate(4)
        handlers.handle(Replicate(1, 0, offset, _hello(log, 1)), PEER)
    _, offset = log.locate(3)
    bad_crc = rp.encode_follower_hello(rp.FollowerHello(log.meta.history, 2, 12345, "f"))
    with pytest.raises(Diverged, match="differs"):
        handlers.handle(Replicate(1, 0, offset, bad_crc), PEER)
    with pytest.raises(InvalidArgument):  # not a record boundary
        handlers.handle(Replicate(1, 0, offset + 1), PEER)
    with pytest.raises(Diverged, match="no record"):
        handlers.handle(Replicate(1, 0, offset + 1, _hello(log, 2)), PEER)
    with pytest.raises(InvalidArgument):
        handlers.handle(Replicate(1, 0, 0, b"\xc1"), PEER)
    log.retain(max_bytes=1)
    with pytest.raises(NotRetained, match="partition 1 is no longer retained"):
        handlers.handle(Replicate(1, 0, 0, _hello(log, 0, None)), PEER)
    log.close()


def test_follower_settings_share_the_table_machinery(tmp_path: Path) -> None:
    from follower.config import FollowerConfig
    from logd.config import ConfigError, FsyncMode, load_table

    toml = tmp_path / "f.toml"
    toml.write_text('primary = "10.0.0.1:1774"\nfsync = "interval:20"\n')
    config = load_table(str(toml), {"data_dir": "/copy", "fsync": None}, FollowerConfig)
    assert (config.primary, config.data_dir) == (("10.0.0.1:1774",), "/copy")  # a list of one
    assert config.fsync.mode is FsyncMode.INTERVAL and config.fsync.interval_ms == 20
    with pytest.raises(ConfigError, match="logd-follower --help"):
        load_table(None, {"partition_size": "1k"}, FollowerConfig)  # a server-only setting
    with pytest.raises(ConfigError, match="--fsync"):
        load_table(None, {"fsync": "sometimes"}, FollowerConfig)


def test_retain_before_deletes_what_the_primary_dropped_never_the_active(tmp_path: Path) -> None:
    _, log = _primary(tmp_path)
    parts = [p.number for p in log.partitions()]
    assert len(parts) >= 3
    assert log.retain(before=parts[1]) == [parts[0]]
    assert not any(n.startswith(f"{parts[0]:010d}-") for n in os.listdir(tmp_path / "primary"))
    assert log.retain(before=parts[1]) == []
    # Even asked to drop everything, the active partition stays.
    assert log.retain(before=parts[-1] + 5) == parts[1:-1]
    assert [p.number for p in log.partitions()] == [parts[-1]]
    log.close()


@pytest.mark.parametrize("interval, seed", [(1, 1), (97, 2), (600, 3), (4096, 4)])
def test_copy_index_files_same_bytes_as_append(tmp_path: Path, interval: int, seed: int) -> None:
    """The follower's path (the scan picks the index entries) writes the same
    partition and .idx bytes as FileLog.append for the same records, across
    rolls and a restart of the copy in the middle of a partition."""
    rng = random.Random(seed)
    primary = FileLog(str(tmp_path / "primary"), partition_size=3000, index_interval=interval, fsync=False)
    for _ in range(150):
        primary.append([os.urandom(rng.randrange(60)) for _ in range(rng.randint(1, 7))])
    parts = [(p.number, p.first_id, (tmp_path / "primary" / os.path.basename(p.path)).read_bytes())
             for p in primary.partitions()]
    primary.close()
    assert len(parts) >= 3

    def open_copy() -> FileLog:
        return FileLog(str(tmp_path / "copy"), index_interval=interval, fsync=False)

    copy = open_copy()
    copy.roll_to(parts[0][0], parts[0][1])
    rep = Replicator(parts[0][0], 0, parts[0][1] - 1, 0, interval, copy.index_due())
    for n, (number, first_id, raw) in enumerate(parts):
        if n:
            copy.roll_to(*_roll(rep.on_next(rp.Next(number, first_id))))
        pos, restarted = 0, n != 1
        while pos < len(raw):
            size = rng.randint(1, 700)
            w = rep.on_data(_data(number, pos, raw[pos : pos + size], final=pos + size >= len(raw)))
            pos += size
            if w is None:
                continue
            copy.append_records(w.first_id, w.data, w.count, w.points)
            if not restarted and pos > len(raw) // 2:  # a new connection from the copy's tail
                restarted = True
                copy.close()
                copy = open_copy()
                active = copy.partitions()[-1]
                rep = Replicator(active.number, active.size, copy.head(), rep.last_crc, interval,
                                 copy.index_due())
                pos = active.size
    copy.close()
    names = sorted(f for f in os.listdir(tmp_path / "primary") if f.endswith((".log", ".idx")))
    assert len([f for f in names if f.endswith(".idx")]) == len(parts)
    for name in names:
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / "primary" / name).read_bytes(), name


def _roll(roll: Roll) -> tuple[int, int]:
    return roll.partition, roll.first_id
