"""The Log contract (logd/log/__init__.py), one suite for MemoryLog and FileLog.

FileLog runs in tmp_path with 200-byte partitions, so most batches start a
new partition and every multi-id read crosses partition boundaries.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator

import pytest

from logd.log import Log
from logd.log.file import FileLog
from logd.log.memory import MemoryLog
from logd.record import Record, iter_records


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
    """The bytes ``spans()`` names, read from wherever they are."""
    out = []
    for source, offset, length in log.spans(start, end):
        assert length > 0
        if isinstance(source, bytes):
            out.append(source[offset : offset + length])
        else:
            with open(source, "rb") as f:
                f.seek(offset)
                data = f.read(length)
            assert len(data) == length
            out.append(data)
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
    assert list(log.spans(1, 1)) == []


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


def test_spans_are_exactly_the_records(log: Log) -> None:
    bodies = fill(log, seed=2, batches=12)
    n = len(bodies)
    for start in range(1, n + 2):
        for end in range(start, n + 2):
            data = stored(log, start, end)
            got = [(r.id, r.body) for _, r in iter_records(data)]
            assert got == [(i, bodies[i - 1]) for i in range(start, end)]


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
