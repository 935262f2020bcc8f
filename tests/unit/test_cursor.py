"""The log cursor (logd/log/cursor.py) on FileLog: ranges, positions, retention, corruption.

Small partitions (200 bytes), so most reads cross partitions. Retention runs
between two ranges, as it can while a stream is blocked sending one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logd.errors import CorruptLogError, InvalidArgument, NotRetained
from logd.log.cursor import Cursor
from logd.log.file import FileLog
from logd.record import iter_records

from .test_file_log import fill, flog  # noqa: F401 - flog is a fixture


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


def take(cursor: Cursor, end: int) -> list[tuple[int, bytes]]:
    data = b"".join(os.pread(fd, count, off) for fd, off, count in cursor.ranges(end))
    return [(r.id, r.body) for _, r in iter_records(data)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_ranges_are_the_records_one_range_per_partition(flog: FileLog) -> None:
    bodies = fill(flog)
    parts = flog.partitions()
    with flog.cursor(1) as cursor:
        ranges = list(cursor.ranges(flog.head() + 1))
        assert [(off, count) for _, off, count in ranges] == [(0, p.size) for p in parts]
        assert cursor.next_id == flog.head() + 1
        assert cursor.position == (parts[-1].number, parts[-1].size)
    with flog.cursor(3) as cursor:
        assert take(cursor, 10) == [(i, bodies[i - 1]) for i in range(3, 10)]
        assert cursor.next_id == 10
        assert take(cursor, 10) == []  # nothing new
        assert take(cursor, 10**9) == [(i, bodies[i - 1]) for i in range(10, flog.head() + 1)]


def test_positions_agree_with_the_log_and_seek_back(flog: FileLog) -> None:
    bodies = fill(flog)
    with flog.cursor(1) as cursor:
        for id in range(1, flog.head() + 2):
            cursor.seek(id)
            assert cursor.position == flog.position(id)
            cursor.seek_position(*flog.position(id))
            assert cursor.next_id == id
            assert take(cursor, id + 2) == [(i, bodies[i - 1]) for i in range(id, min(id + 2, flog.head() + 1))]
        # The end of a sealed partition is a position too: that of the next id.
        p = flog.partitions()[0]
        cursor.seek_position(p.number, p.size)
        assert cursor.next_id == p.last_id + 1


def test_seek_position_refuses_what_is_not_a_record_start(flog: FileLog) -> None:
    fill(flog)
    p = flog.partitions()[1]
    with flog.cursor(1) as cursor:
        for bad in [(p.number, 1), (p.number, p.size + 1), (flog.partitions()[-1].number + 1, 0)]:
            with pytest.raises(InvalidArgument):
                cursor.seek_position(*bad)
        flog.retain(max_bytes=sum(q.size for q in flog.partitions()[1:]))
        with pytest.raises(NotRetained):
            cursor.seek_position(1, 0)


def test_a_cursor_owns_one_fd_and_only_once_read(flog: FileLog) -> None:
    fill(flog)
    for p in flog.partitions():
        flog.locate(p.last_id)  # the log's own read fds (for locate), opened now
    before = open_fds()
    cursor = flog.cursor(1)
    assert open_fds() == before  # nothing opened until read
    for _ in cursor.ranges(flog.head() + 1):
        assert open_fds() == before + 1  # the partition it is in, however many it crossed
    cursor.close()
    assert open_fds() == before


def test_finishes_a_deleted_partition_from_its_fd_then_goes_on(flog: FileLog) -> None:
    bodies = [b"a", b"b", b"c", b"d"]
    for body in bodies:
        flog.append([body])
    bodies += fill(flog)
    first, second = flog.partitions()[:2]
    assert first.count >= 3
    mid = first.first_id + 1
    with flog.cursor(1) as cursor:
        assert take(cursor, mid) == [(i, bodies[i - 1]) for i in range(1, mid)]
        assert flog.retain(max_bytes=sum(p.size for p in flog.partitions()[1:])) == [first.number]
        assert not os.path.exists(first.path)
        # A stop inside the deleted partition (a bounded READ ending there): found
        # through the cursor's fd and the partition's index, which stay with it.
        assert take(cursor, mid + 1) == [(mid, bodies[mid - 1])]
        # The rest of it, then every later partition, by id.
        mid += 1
        assert take(cursor, flog.head() + 1) == [(i, bodies[i - 1]) for i in range(mid, flog.head() + 1)]


def test_notretained_when_the_partition_after_a_deleted_one_is_gone_too(flog: FileLog) -> None:
    bodies = fill(flog)
    first, second, third = flog.partitions()[:3]
    with flog.cursor(1) as cursor:
        assert take(cursor, 2) == [(1, bodies[0])]
        flog.retain(max_bytes=sum(p.size for p in flog.partitions()[2:]))
        got = []
        with pytest.raises(NotRetained) as info:
            for fd, off, count in cursor.ranges(flog.head() + 1):
                got.append(os.pread(fd, count, off))
        # Exactly the rest of the partition held open, then the line for the next id.
        assert [r.id for _, r in iter_records(b"".join(got))] == list(range(2, first.last_id + 1))
        assert str(info.value).startswith(f"records from {second.first_id} were deleted by retention")
        assert (info.value.first, info.value.head) == (third.first_id, flog.head())


def test_a_start_deleted_before_the_first_read_is_notretained(flog: FileLog) -> None:
    fill(flog)
    cursor = flog.cursor(2)
    flog.retain(max_bytes=1)
    with pytest.raises(NotRetained) as info:
        list(cursor.ranges(flog.head() + 1))
    assert str(info.value).startswith("records from 2 were deleted by retention")
    cursor.close()


def corrupt_log(tmp_path: Path) -> tuple[FileLog, list[bytes], int]:
    """A log whose record 5 fails its CRC, opened with allow_corrupt."""
    d = tmp_path / "bad"
    flog = FileLog(str(d), partition_size=10_000, index_interval=64, fsync_func=lambda fd: None)
    bodies = [b"record %02d" % i for i in range(1, 21)]
    for body in bodies:
        flog.append([body])
    p, off = flog.locate(5)
    flog.close()
    with open(p.path, "r+b") as f:
        data = f.read()
        at = data.index(b"record 05", off)
        f.seek(at)
        f.write(b"X")
    return FileLog(str(d), allow_corrupt=True, verify="full", fsync_func=lambda fd: None), bodies, 5


def test_stops_before_a_known_bad_record(tmp_path: Path) -> None:
    flog, bodies, bad = corrupt_log(tmp_path)
    try:
        with flog.cursor(1) as cursor:
            got = []
            with pytest.raises(CorruptLogError) as info:
                for fd, off, count in cursor.ranges(flog.head() + 1):
                    got.append(os.pread(fd, count, off))
            assert [(r.id, r.body) for _, r in iter_records(b"".join(got))] == [
                (i, bodies[i - 1]) for i in range(1, bad)]
            assert info.value.id == bad and cursor.next_id == bad
            with pytest.raises(CorruptLogError):  # asked again: the same answer, nothing sent
                assert list(cursor.ranges(flog.head() + 1)) == []
        with flog.cursor(bad + 1) as cursor:
            assert take(cursor, flog.head() + 1) == [(i, bodies[i - 1]) for i in range(bad + 1, 21)]
        with flog.cursor(1) as cursor:
            assert take(cursor, bad) == [(i, bodies[i - 1]) for i in range(1, bad)]  # up to it: fine
    finally:
        flog.close()
