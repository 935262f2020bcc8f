"""The Log contract (logd/log/__init__.py), one suite for MemoryLog and FileLog,
and its read-only part: LogReader on a directory a FileLog writes.

FileLog runs in tmp_path with 200-byte partitions, so most batches start a
new partition and every multi-id read crosses partition boundaries.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator

import pytest

from logd.errors import InvalidArgument, Refused
from logd.log import Log
from logd.log.file import FileLog
from logd.log.memory import MemoryLog
from logd.log.reader import LogReader
from logd.record import Record, encode, encode_batch, iter_records


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Durability is not under test here, and fsync makes a loaded disk slow."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


@pytest.fixture(params=["memory", "file"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Log]:
    if request.param == "memory":
        yield MemoryLog()
    else:
        flog = FileLog(str(tmp_path / "data"), partition_size=200, index_interval=64, fsync_func=lambda fd: None)
        try:
            yield flog
        finally:
            flog.close()


def stored(log: Log, start: int, end: int) -> bytes:
    """The bytes a cursor from ``start`` gives up to ``end``, read from its fds."""
    out = []
    cursor = log.cursor(start)
    try:
        for fd, offset, length in cursor.ranges(end):
            assert length > 0
            data = os.pread(fd, length, offset)
            assert len(data) == length
            out.append(data)
        assert cursor.next_id == max(start, end)
    finally:
        cursor.close()
    return b"".join(out)


def fill(log: Log, seed: int = 0, batches: int = 25) -> list[bytes]:
    rng = random.Random(seed)
    bodies: list[bytes] = []
    for _ in range(batches):
        batch = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 60))) for _ in range(rng.randint(1, 4))]
        assert log.append(batch) == len(bodies) + len(batch)
        bodies.extend(batch)
    return bodies


def test_empty_log(log: Log) -> None:
    assert log.head() == 0
    assert log.first_id() == 1
    assert log.synced_head() == 0
    assert log.read(1, 1) == []
    assert stored(log, 1, 1) == b""


def test_append_returns_the_last_id(log: Log) -> None:
    assert log.append([b"a"]) == 1
    assert log.append([b"b", b"c", b"d"]) == 4
    assert log.head() == 4
    assert log.append([b"e"]) == 5
    assert [(r.id, r.body) for r in log.read(1, 6)] == [(1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b"e")]


def test_empty_batch_writes_nothing(log: Log) -> None:
    log.append([b"a"])
    assert log.append([]) == 1
    assert log.head() == 1
    assert log.append([b"b"]) == 2


def test_ids_are_contiguous_from_one(log: Log) -> None:
    bodies = fill(log)
    assert log.head() == len(bodies)
    assert log.first_id() == 1
    assert [(r.id, r.body) for r in log.read(1, log.head() + 1)] == list(enumerate(bodies, 1))
    if isinstance(log, FileLog):
        assert len(log.partitions()) > 5


def test_read_any_range(log: Log) -> None:
    bodies = fill(log, seed=1, batches=12)
    n = len(bodies)
    for start in range(1, n + 2):
        for end in range(start, n + 2):
            got = log.read(start, end)
            assert [r.id for r in got] == list(range(start, end))
            assert [r.body for r in got] == bodies[start - 1 : end - 1]


def test_cursor_ranges_are_exactly_the_records(log: Log) -> None:
    bodies = fill(log, seed=2, batches=12)
    n = len(bodies)
    for start in range(1, n + 2):
        for end in range(start, n + 2):
            data = stored(log, start, end)
            got = [(r.id, r.body) for _, r in iter_records(data)]
            assert got == [(i, bodies[i - 1]) for i in range(start, end)]


def test_a_cursor_seeks_by_id_and_by_position(log: Log) -> None:
    bodies = fill(log, seed=6, batches=10)
    n = len(bodies)
    cursor = log.cursor(1)
    try:
        for id in range(1, n + 2):
            cursor.seek(id)
            assert cursor.position == log.position(id)
            cursor.seek(1)
            cursor.seek_position(*log.position(id))
            assert cursor.next_id == id
            data = b"".join(os.pread(fd, c, o) for fd, o, c in cursor.ranges(n + 1))
            assert [r.body for _, r in iter_records(data)] == bodies[id - 1 :]
            assert cursor.position == log.position(n + 1)
        partition, offset = log.position(2)
        with pytest.raises(InvalidArgument):
            cursor.seek_position(partition, offset + 1)  # inside record 2
        with pytest.raises(InvalidArgument):
            cursor.seek_position(partition + 10**6, 0)
    finally:
        cursor.close()


def test_a_body_larger_than_a_partition(log: Log) -> None:
    log.append([b"small"])
    big = bytes(range(256)) * 4
    assert log.append([big, b"after"]) == 3
    assert log.append([b"last"]) == 4
    assert [r.body for r in log.read(1, 5)] == [b"small", big, b"after", b"last"]
    assert [r.body for _, r in iter_records(stored(log, 2, 4))] == [big, b"after"]


def test_sync_advances_synced_head(log: Log) -> None:
    start = log.synced_head()
    log.append([b"a", b"b"])
    assert log.synced_head() == start
    point = log.begin_sync()
    assert point.head == 2
    point.run()
    log.end_sync(point)
    assert log.synced_head() == 2
    # Appends after begin_sync are not covered by that point.
    log.append([b"c"])
    point = log.begin_sync()
    log.append([b"d" * 150, b"e"])
    point.run()
    log.end_sync(point)
    assert log.synced_head() == 3
    point = log.begin_sync()
    point.run()
    log.end_sync(point)
    assert log.synced_head() == 5
    # An older point never moves synced_head back.
    old = log.begin_sync()
    log.end_sync(old)
    assert log.synced_head() == 5


def test_stats(log: Log) -> None:
    fill(log, seed=3, batches=5)
    stats = log.stats()
    assert stats["bytes"] == len(stored(log, 1, log.head() + 1))
    assert isinstance(stats["partitions"], int) and stats["partitions"] >= 1


def test_a_failed_batch_writes_nothing(log: Log, request: pytest.FixtureRequest) -> None:
    log.append([b"before"])
    with pytest.raises(Exception):
        log.append([b"ok", b"fine", "not bytes"])  # type: ignore[list-item]
    assert log.head() == 1
    assert log.read(1, 2) == [Record(1, b"before")]
    assert log.append([b"after"]) == 2
    assert [r.body for r in log.read(1, 3)] == [b"before", b"after"]


# -- the read-only part: LogReader on a directory that a FileLog writes -------------


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[FileLog, LogReader]]:
    """A writer and a read-only log on the same directory (one process: enough here)."""
    writer = FileLog(str(tmp_path / "data"), partition_size=200, index_interval=64, fsync_func=lambda fd: None)
    reader = LogReader(str(tmp_path / "data"), index_interval=64)
    try:
        yield writer, reader
    finally:
        reader.close()
        writer.close()


def test_read_only_refuses_every_write(pair: tuple[FileLog, LogReader]) -> None:
    writer, reader = pair
    fill(writer, batches=5)
    reader.refresh()
    head = reader.head()
    for write in (lambda: reader.append([b"x"]), reader.begin_sync, lambda: reader.end_sync(None),
                  lambda: reader.fail_sync(OSError("x"))):
        with pytest.raises(Refused) as info:
            write()
        assert "read-only" in str(info.value)
    assert reader.head() == writer.head() == head
    assert stored(reader, 1, head + 1) == stored(writer, 1, head + 1)


def test_refresh_sees_a_writers_appends(pair: tuple[FileLog, LogReader]) -> None:
    writer, reader = pair
    assert reader.head() == 0 and stored(reader, 1, 1) == b""
    bodies = fill(writer, seed=4, batches=5)
    assert reader.head() == 0  # nothing until refresh
    assert reader.refresh() == writer.head() == len(bodies)
    for i in range(30):  # new partitions too
        bodies.append(b"%d" % i * 20)
        writer.append([bodies[-1]])
    assert reader.refresh() == len(bodies)
    assert [p.number for p in reader.partitions()] == [p.number for p in writer.partitions()]
    assert [(r.id, r.body) for r in reader.read(1, len(bodies) + 1)] == list(enumerate(bodies, 1))
    assert stored(reader, 1, len(bodies) + 1) == stored(writer, 1, len(bodies) + 1)
    assert reader.position(len(bodies) + 1) == writer.position(len(bodies) + 1)


@pytest.mark.parametrize("cut", ["inside_a_record", "between_records", "inside_a_header"])
def test_refresh_never_sees_half_a_msg(pair: tuple[FileLog, LogReader], cut: str) -> None:
    """A MSG's bytes land in two writes (as a slow write can): refresh sees none of
    it after the first, all of it after the second."""
    writer, reader = pair
    writer.append([b"before"])
    reader.refresh()
    active = writer.partitions()[-1]
    data, sizes = encode_batch(2, [b"one", b"two" * 5, b"three"])
    at = {"inside_a_record": sizes[0] + 7, "between_records": sizes[0] + sizes[1],
          "inside_a_header": sizes[0] + 3}[cut]
    with open(active.path, "ab") as f:
        f.write(data[:at])
    assert reader.refresh() == 1
    assert stored(reader, 1, 2) == encode(1, b"before")
    assert reader.read(1, 10) == [Record(1, b"before")]
    with open(active.path, "ab") as f:
        f.write(data[at:])
    assert reader.refresh() == 4
    assert [r.body for r in reader.read(1, 5)] == [b"before", b"one", b"two" * 5, b"three"]
    assert stored(reader, 2, 5) == data
