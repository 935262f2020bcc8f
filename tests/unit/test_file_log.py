"""FileLog specifics: reopening, index recovery, torn and garbage tails, the lock.

Pure file I/O in tmp_path. A crash is simulated by copying the data
directory while the log is still open (no clean-shutdown marker, indexes as
they were last saved), then opening the copy.
"""

from __future__ import annotations

import errno
import inspect
import os
import random
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from logd.errors import DiskFull, NotRetained, StorageError
from logd.log.file import FileLog
from logd.log.index import SparseIndex
from logd.record import encode, iter_records

SMALL = dict(partition_size=200, index_interval=64, fsync_func=lambda fd: None)
# Where FileLog can verify every record at open, ask it to trust sane indexes.
TRUST_INDEX = {"verify": "tail"} if "verify" in inspect.signature(FileLog).parameters else {}


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Durability is not under test here, and fsync makes a loaded disk slow."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


def open_log(path: Path, **kw: object) -> FileLog:
    return FileLog(str(path), **{**SMALL, **kw})  # type: ignore[arg-type]


def crash_copy(flog: FileLog, dst: Path) -> Path:
    """The data directory as a crash would leave it."""
    shutil.copytree(flog.directory, dst, ignore=shutil.ignore_patterns("lock"))
    return dst


def fill(flog: FileLog, seed: int = 0, batches: int = 20) -> list[bytes]:
    rng = random.Random(seed)
    bodies: list[bytes] = []
    for _ in range(batches):
        batch = [bytes(rng.randrange(256) for _ in range(rng.randint(1, 50))) for _ in range(rng.randint(1, 3))]
        flog.append(batch)
        bodies.extend(batch)
    return bodies


def check_all(flog: FileLog, bodies: list[bytes]) -> None:
    """Every id reads back, alone and all together, and locate() agrees with a scan."""
    assert flog.head() == len(bodies)
    assert [(r.id, r.body) for r in flog.read(1, flog.head() + 1)] == list(enumerate(bodies, 1))
    for i in range(1, flog.head() + 1):
        assert [r.body for r in flog.read(i, i + 1)] == [bodies[i - 1]]
    check_locate(flog)


def scanned_offsets(flog: FileLog) -> dict[int, tuple[int, int]]:
    where = {}
    for p in flog.partitions():
        data = Path(p.path).read_bytes()
        assert len(data) == p.size
        for off, rec in iter_records(data):
            where[rec.id] = (p.number, off)
    return where


def check_locate(flog: FileLog) -> None:
    where = scanned_offsets(flog)
    assert sorted(where) == list(range(1, flog.head() + 1))
    for id, (number, off) in where.items():
        p, got = flog.locate(id)
        assert (p.number, got) == (number, off), id
    p, off = flog.locate(flog.head() + 1)
    assert p.number == flog.partitions()[-1].number and off == p.size


@pytest.fixture
def flog(tmp_path: Path) -> Iterator[FileLog]:
    log = open_log(tmp_path / "data")
    try:
        yield log
    finally:
        log.close()


def test_partition_files(flog: FileLog) -> None:
    fill(flog)
    names = sorted(n for n in os.listdir(flog.directory) if n.endswith(".log"))
    parts = flog.partitions()
    assert len(parts) > 3
    assert names == [os.path.basename(p.path) for p in parts]
    for prev, p in zip(parts, parts[1:]):
        assert p.number == prev.number + 1 and p.first_id == prev.last_id + 1
        assert p.path.endswith(f"{p.number:010d}-{p.first_id:020d}.log")


def test_locate_every_id(flog: FileLog) -> None:
    bodies = fill(flog, seed=4, batches=40)
    check_all(flog, bodies)


def test_locate_with_the_default_index_interval(tmp_path: Path) -> None:
    flog = open_log(tmp_path / "d", partition_size=20_000, index_interval=4096)
    bodies = fill(flog, seed=5, batches=300)
    check_all(flog, bodies)
    flog.close()
    flog = open_log(tmp_path / "d", partition_size=20_000, index_interval=4096)
    check_all(flog, bodies)
    flog.close()


@pytest.mark.parametrize("crash", [False, True], ids=["clean", "crash"])
def test_reopen_continues_ids(tmp_path: Path, crash: bool) -> None:
    flog = open_log(tmp_path / "data")
    bodies = fill(flog)
    parts = len(flog.partitions())
    if crash:
        path = crash_copy(flog, tmp_path / "copy")
        flog.close()
    else:
        flog.close()
        path = tmp_path / "data"
    again = open_log(path)
    try:
        assert again.recovered_clean is not crash
        assert len(again.partitions()) == parts
        assert again.first_id() == 1
        check_all(again, bodies)
        assert again.append([b"next"]) == len(bodies) + 1
        check_all(again, [*bodies, b"next"])
    finally:
        again.close()


def index_damage(kind: str, data: bytes, rng: random.Random) -> bytes | None:
    if kind == "missing":
        return None
    if kind == "empty":
        return b""
    if kind == "partial-entry":
        return data[:-5]
    if kind == "half":
        return data[: len(data) // 32 * 16]
    if kind == "zeros":
        return bytes(len(data))
    if kind == "garbage":
        return bytes(rng.randrange(256) for _ in range(len(data)))
    if kind == "garbage-long":
        return data + bytes(rng.randrange(256) for _ in range(64))
    raise AssertionError(kind)


@pytest.mark.parametrize("crash", [False, True], ids=["clean", "crash"])
@pytest.mark.parametrize("kind", ["missing", "empty", "partial-entry", "half", "zeros", "garbage", "garbage-long"])
def test_damaged_index_is_rebuilt(tmp_path: Path, kind: str, crash: bool) -> None:
    flog = open_log(tmp_path / "data", partition_size=600, index_interval=40)
    bodies = fill(flog, seed=6, batches=40)
    path = crash_copy(flog, tmp_path / "copy") if crash else None
    flog.close()
    path = path or tmp_path / "data"
    rng = random.Random(kind)
    idx_files = sorted(path.glob("*.idx"))
    assert len(idx_files) >= 3
    for idx in idx_files:
        new = index_damage(kind, idx.read_bytes(), rng)
        if new is None:
            idx.unlink()
        else:
            idx.write_bytes(new)
    again = open_log(path, partition_size=600, index_interval=40)
    try:
        check_all(again, bodies)
        assert again.append([b"next"]) == len(bodies) + 1
        check_all(again, [*bodies, b"next"])
    finally:
        again.close()
    # The rebuilt indexes were saved.
    for idx in sorted(path.glob("*.idx")):
        loaded = SparseIndex.load(str(idx), 40)
        assert loaded is not None and len(loaded) > 0


def test_index_entry_pointing_at_the_wrong_record_is_caught(tmp_path: Path) -> None:
    flog = open_log(tmp_path / "data", partition_size=100_000, index_interval=64)
    bodies = [b"m%03d" % i * 5 for i in range(1, 60)]
    flog.append(bodies)
    flog.close()
    again = open_log(tmp_path / "data", partition_size=100_000, index_interval=64)
    p = again.partitions()[0]
    index = p.index
    again.close()
    assert len(index) >= 5
    offsets = scanned_offsets_of(tmp_path / "data" / os.path.basename(p.path))
    # Entry 1 is neither the first, the middle nor the last: point it one record early.
    index.offsets[1] = offsets[index.ids[1] - 1]
    index.save(p.idx_path)
    third = open_log(tmp_path / "data", partition_size=100_000, index_interval=64, **TRUST_INDEX)
    try:
        id = index.ids[1]
        assert [(r.id, r.body) for r in third.read(id, id + 1)] == [(id, bodies[id - 1])]
    finally:
        third.close()


def scanned_offsets_of(path: Path) -> dict[int, int]:
    return {rec.id: off for off, rec in iter_records(path.read_bytes())}


# -- torn and garbage tails --------------------------------------------------------------


def build(tmp_path: Path, partition_size: int) -> tuple[Path, list[bytes]]:
    """A small closed log whose last MSG is a single record."""
    flog = open_log(tmp_path / "base", partition_size=partition_size)
    bodies = [b"one", b"two\r\n", b"three"]
    flog.append(bodies[:1])
    flog.append(bodies[1:])
    flog.append([b"last record"])
    flog.close()
    return tmp_path / "base", [*bodies, b"last record"]


def last_partition(path: Path) -> Path:
    return sorted(path.glob("*.log"))[-1]


def reopen_after_damage(path: Path, cut_to: int | None, extra: bytes, clean: bool) -> tuple[FileLog, bytes]:
    part = last_partition(path)
    data = part.read_bytes()
    kept = data if cut_to is None else data[:cut_to]
    part.write_bytes(kept + extra)
    if not clean:
        (path / "clean-shutdown").unlink()
    return open_log(path, partition_size=SIZE_OF[path.name]), kept + extra


SIZE_OF: dict[str, int] = {}


@pytest.mark.parametrize("clean", [False, True], ids=["crash", "clean-marker"])
@pytest.mark.parametrize("partition_size", [10_000, 60], ids=["one-partition", "record-alone"])
def test_torn_last_record_is_truncated(tmp_path: Path, partition_size: int, clean: bool) -> None:
    base, bodies = build(tmp_path, partition_size)
    last = encode(4, b"last record")
    part = last_partition(base)
    size = part.stat().st_size
    assert part.read_bytes().endswith(last)
    record_start = size - len(last)
    for k in range(1, len(last)):
        path = tmp_path / f"cut{k}"
        shutil.copytree(base, path)
        SIZE_OF[path.name] = partition_size
        flog, _ = reopen_after_damage(path, record_start + k, b"", clean)
        try:
            assert flog.head() == 3, k
            assert flog.bytes_dropped == k
            trunc = sorted(path.glob("*.trunc.*"))
            assert [t.read_bytes() for t in trunc] == [last[:k]]
            assert trunc[0].name.startswith(part.name + ".trunc.")
            assert flog.append([b"again"]) == 4
            check_all(flog, [*bodies[:3], b"again"])
        finally:
            flog.close()
        shutil.rmtree(path)


@pytest.mark.parametrize("clean", [False, True], ids=["crash", "clean-marker"])
def test_garbage_after_the_last_record_is_truncated(tmp_path: Path, clean: bool) -> None:
    base, bodies = build(tmp_path, 10_000)
    rng = random.Random(1774)
    sizes = [1, 2, 7, 63, 64, 65, 500, 1024, *(rng.randint(1, 1024) for _ in range(6))]
    specials = [b"+", b"+5 ", b"\r\n", encode(4, b"duplicate id"), encode(9, b"id gap"), b"+5 99999 0 00000000\r\n"]
    extras = [bytes(rng.randrange(256) for _ in range(n)) for n in sizes] + specials
    for i, extra in enumerate(extras):
        path = tmp_path / f"g{i}"
        shutil.copytree(base, path)
        SIZE_OF[path.name] = 10_000
        good_size = last_partition(path).stat().st_size
        flog, _ = reopen_after_damage(path, None, extra, clean)
        try:
            assert flog.head() == 4, extra
            assert flog.bytes_dropped == len(extra)
            assert last_partition(path).stat().st_size == good_size
            assert [t.read_bytes() for t in sorted(path.glob("*.trunc.*"))] == [extra]
            assert flog.append([b"next"]) == 5
            check_all(flog, [*bodies, b"next"])
        finally:
            flog.close()
        shutil.rmtree(path)


def test_a_second_truncation_gets_the_next_number(tmp_path: Path) -> None:
    base, bodies = build(tmp_path, 10_000)
    SIZE_OF[base.name] = 10_000
    for n in range(2):
        flog, _ = reopen_after_damage(base, None, b"junk%d" % n, clean=False)
        flog.close()
    assert sorted(t.name[-7:] for t in base.glob("*.trunc.*")) == ["trunc.0", "trunc.1"]
    assert sorted(t.read_bytes() for t in base.glob("*.trunc.*")) == [b"junk0", b"junk1"]


# -- the lock, and failed writes -----------------------------------------------------------


def test_a_second_log_on_the_same_directory_fails(tmp_path: Path) -> None:
    first = open_log(tmp_path / "data")
    try:
        with pytest.raises(StorageError):
            open_log(tmp_path / "data")
        first.append([b"still works"])
    finally:
        first.close()
    second = open_log(tmp_path / "data")
    assert second.head() == 1
    second.close()


def test_disk_full_writes_nothing(flog: FileLog, monkeypatch: pytest.MonkeyPatch) -> None:
    flog.append([b"before"])
    real_write = os.write

    def half_then_enospc(fd: int, data: bytes) -> int:
        if fd == flog._fd:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(DiskFull):
        flog.append([b"x" * 30, b"y" * 30])
    monkeypatch.undo()
    assert flog.head() == 1
    assert os.path.getsize(flog.partitions()[-1].path) == flog.partitions()[-1].size
    assert flog.append([b"after"]) == 2
    check_all(flog, [b"before", b"after"])


def _ranges_with_retention(flog: FileLog, start: int, end: int, keep_bytes: int) -> list[object]:
    """Walk a cursor's ``ranges(end)`` from ``start``, letting retention run after the
    first range (as it can while a stream is blocked sending it); the ranges got, as
    (inode, offset, count), or the exception."""
    got: list[object] = []
    with flog.cursor(start) as cursor:
        it = cursor.ranges(end)
        try:
            fd, off, count = next(it)
            got.append((os.fstat(fd).st_ino, off, count))
            flog.retain(max_bytes=keep_bytes)
            got.extend((os.fstat(fd).st_ino, off, count) for fd, off, count in it)
        except Exception as exc:  # noqa: BLE001 - the test looks at which
            got.append(exc)
    return got


def _whole(p: object) -> tuple[int, int, int]:
    return os.stat(p.path).st_ino, 0, p.size  # type: ignore[attr-defined]


@pytest.mark.parametrize("keep", ["all_but_two", "only_active"])
def test_cursor_survives_retention_between_ranges(flog: FileLog, keep: str) -> None:
    """Issue 7 item 3: spans() held a list index across its yields; retention popping
    partitions from the front made it skip partitions (a gap) or raise IndexError.
    The cursor must go on with the partition that follows the one it sent, or raise
    NotRetained when that one is gone too."""
    fill(flog, batches=40)
    parts = flog.partitions()
    assert len(parts) > 5
    first, second = parts[0], parts[1]
    if keep == "all_but_two":
        # Deletes partitions 1 and 2: the range of 1 is sent (the cursor holds its fd),
        # the records of 2 are gone.
        budget = sum(p.size for p in parts[2:])
    else:
        budget = 1
    whole_first = _whole(first)
    got = _ranges_with_retention(flog, 1, flog.head() + 1, budget)
    assert got[0] == whole_first
    assert len(got) == 2 and isinstance(got[1], NotRetained), got
    assert f"from {second.first_id}" in str(got[1])
    assert got[1].first == flog.first_id()


def test_cursor_goes_on_with_the_next_partition_when_only_the_sent_one_is_deleted(flog: FileLog) -> None:
    fill(flog, batches=40)
    parts = flog.partitions()
    budget = sum(p.size for p in parts[1:])  # deletes partition 1 only
    expected = [_whole(p) for p in parts]
    got = _ranges_with_retention(flog, 1, flog.head() + 1, budget)
    assert got == expected
