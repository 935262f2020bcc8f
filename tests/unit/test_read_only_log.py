"""LogReader opened by itself: the read-only log (logd/log/reader.py).

It takes no lock, repairs nothing and writes nothing, even on a directory a
crash left (torn tail, stale or missing indexes); refresh() follows a live
writer's appends, rolls and retention. The contract part (writes refused,
refresh never showing half a MSG) is in test_log_contract.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from logd.errors import NotRetained, StorageError
from logd.log.file import FileLog
from logd.log.reader import LogReader
from logd.log.partition import partition_name
from logd.record import encode, iter_records

SMALL = dict(partition_size=200, index_interval=64, fsync_func=lambda fd: None)


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


def snapshot(d: Path) -> dict[str, tuple[int, int, str]]:
    """Every file's size, mtime and content hash: what "nothing written" means."""
    out = {}
    for name in sorted(os.listdir(d)):
        st = os.stat(d / name)
        out[name] = (st.st_size, st.st_mtime_ns, hashlib.sha256((d / name).read_bytes()).hexdigest())
    return out


def write(flog: FileLog, n: int, tag: bytes = b"r") -> list[bytes]:
    bodies = [tag + b"%04d" % (flog.head() + i) for i in range(1, n + 1)]
    for body in bodies:
        flog.append([body])
    return bodies


def bodies_of(log: LogReader) -> list[bytes]:
    return [r.body for r in log.read(log.first_id(), log.head() + 1)]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[FileLog]:
    flog = FileLog(str(tmp_path / "d"), **SMALL)  # type: ignore[arg-type]
    try:
        yield flog
    finally:
        flog.close()


def test_opens_beside_a_live_writer_and_takes_no_lock(writer: FileLog, tmp_path: Path) -> None:
    got = write(writer, 30)
    reader = LogReader(writer.directory, index_interval=64)  # the writer holds the lock
    try:
        assert bodies_of(reader) == got
        with pytest.raises(StorageError, match="in use"):
            FileLog(writer.directory, **SMALL)  # type: ignore[arg-type]  # the writer's lock stands
    finally:
        reader.close()
    writer.close()
    reader = LogReader(writer.directory, index_interval=64)
    try:
        again = FileLog(writer.directory, **SMALL)  # type: ignore[arg-type]  # a reader holds no lock
        again.close()
    finally:
        reader.close()


def test_a_crashed_directory_is_read_as_it_is_and_left_as_it_is(writer: FileLog, tmp_path: Path) -> None:
    got = write(writer, 40)
    crash = tmp_path / "crash"
    shutil.copytree(writer.directory, crash, ignore=shutil.ignore_patterns("lock"))
    last = sorted(crash.glob("*.log"))[-1]
    with open(last, "ab") as f:
        f.write(b"+41 20 0 0000")  # a torn tail: half a header
    (sorted(crash.glob("*.idx"))[0]).unlink()  # a missing index
    (sorted(crash.glob("*.idx"))[-1]).write_bytes(b"\x01" * 16)  # a stale one
    before = snapshot(crash)
    reader = LogReader(str(crash), index_interval=64)
    try:
        assert bodies_of(reader) == got  # the torn tail is not visible
        assert reader.refresh() == 40
        for id in range(1, 41):
            assert [r.body for r in reader.read(id, id + 1)] == [got[id - 1]]
    finally:
        reader.close()
    assert snapshot(crash) == before  # no lock file, no repair, no index written
    assert not (crash / "lock").exists()


def test_a_missing_directory_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        LogReader(str(tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    reader = LogReader(str(tmp_path / "empty"))
    assert (reader.first_id(), reader.head(), reader.read(1, 5)) == (1, 0, [])
    assert reader.refresh() == 0
    reader.close()


def test_refresh_follows_rolls_and_retention(writer: FileLog) -> None:
    got = write(writer, 10)
    reader = LogReader(writer.directory, index_interval=64)
    try:
        assert bodies_of(reader) == got
        got += write(writer, 40, b"s")  # many new partitions
        assert reader.refresh() == 50
        assert bodies_of(reader) == got
        deleted = writer.retain(max_bytes=600)
        assert deleted
        assert reader.refresh() == 50
        assert reader.first_id() == writer.first_id() > 1
        assert [p.number for p in reader.partitions()] == [p.number for p in writer.partitions()]
        assert bodies_of(reader) == got[writer.first_id() - 1 :]
        with pytest.raises(NotRetained):
            reader.read(1, 2)
    finally:
        reader.close()


def test_a_cursor_on_the_reader_finishes_a_partition_the_writer_deleted(writer: FileLog) -> None:
    got = write(writer, 40)
    reader = LogReader(writer.directory, index_interval=64)
    try:
        first = reader.partitions()[0]
        with reader.cursor(1) as cursor:
            data = b"".join(os.pread(fd, n, off) for fd, off, n in cursor.ranges(2))
            writer.retain(max_bytes=sum(p.size for p in writer.partitions()[1:]))  # partition 1 only
            reader.refresh()
            assert reader.first_id() == first.last_id + 1
            data += b"".join(os.pread(fd, n, off) for fd, off, n in cursor.ranges(reader.head() + 1))
        assert [r.body for _, r in iter_records(data)] == got
    finally:
        reader.close()


def test_a_writers_restart_after_a_crash_is_followed(writer: FileLog, tmp_path: Path) -> None:
    """The writer's recovery cuts a torn MSG the reader never showed; the writer
    then writes on from there, and refresh sees the new records, not the cut ones."""
    got = write(writer, 5)
    active = writer.partitions()[-1]
    reader = LogReader(writer.directory, index_interval=64)
    try:
        with open(active.path, "ab") as f:
            f.write(encode(6, b"cut", more=1))  # a MSG's first record; its end never came
        assert reader.refresh() == 5
        writer.close()
        again = FileLog(writer.directory, **SMALL)  # type: ignore[arg-type]  # recovery cuts it aside
        try:
            got += write(again, 3, b"n")
            assert reader.refresh() == 8
            assert bodies_of(reader) == got
        finally:
            again.close()
    finally:
        reader.close()


@pytest.mark.parametrize("refresh_between", [True, False])
def test_an_empty_partition_removed_and_made_anew_by_the_writer(writer: FileLog, refresh_between: bool) -> None:
    """A crash can leave an empty last partition; the writer's next open removes it
    and its next roll creates the same name again: the reader follows the name."""
    got = [b"x" * 70, b"y" * 70]  # 180 bytes: the next append rolls, at id 3
    for body in got:
        writer.append([body])
    empty = Path(writer.directory) / partition_name(2, 3)
    empty.touch()  # as a crash between creating a partition and writing it leaves it
    reader = LogReader(writer.directory, index_interval=64)
    try:
        assert [(p.number, p.size) for p in reader.partitions()] == [(1, 180), (2, 0)]
        writer.close()
        again = FileLog(writer.directory, **SMALL)  # type: ignore[arg-type]
        try:
            assert not empty.exists()
            if refresh_between:
                assert reader.refresh() == 2
                assert [p.number for p in reader.partitions()] == [1]
            got += write(again, 30, b"n")  # rolls: the same name again, and more
            assert empty.exists()
            assert reader.refresh() == 32
            assert bodies_of(reader) == got
        finally:
            again.close()
    finally:
        reader.close()
