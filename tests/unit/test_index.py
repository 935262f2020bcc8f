"""SparseIndex (logd/log/index.py): entries, persistence, and sane()."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from logd.log.index import ENTRY, SparseIndex
from logd.log.partition import id_at
from logd.record import encode_batch


def index_of(pairs: list[tuple[int, int]], interval: int = 100) -> SparseIndex:
    index = SparseIndex(interval)
    for id, off in pairs:
        index.ids.append(id)
        index.offsets.append(off)
    return index


def entries(index: SparseIndex) -> list[tuple[int, int]]:
    return list(zip(index.ids, index.offsets))


def test_add_keeps_one_entry_per_interval() -> None:
    index = SparseIndex(100)
    for id, off in [(1, 0), (2, 40), (3, 99), (4, 100), (5, 150), (6, 199), (7, 200), (8, 1000)]:
        index.add(id, off)
    assert entries(index) == [(1, 0), (4, 100), (7, 200), (8, 1000)]
    assert len(index) == 4


def test_floor() -> None:
    index = index_of([(1, 0), (10, 100), (20, 200)])
    assert index.floor(1) == (1, 0)
    assert index.floor(9) == (1, 0)
    assert index.floor(10) == (10, 100)
    assert index.floor(19) == (10, 100)
    assert index.floor(20) == (20, 200)
    assert index.floor(10**9) == (20, 200)
    with pytest.raises(KeyError):
        index_of([(5, 0)]).floor(4)
    with pytest.raises(KeyError):
        SparseIndex().floor(1)


@pytest.mark.parametrize(
    "offset, left",
    [(0, []), (1, [(1, 0)]), (100, [(1, 0)]), (101, [(1, 0), (10, 100)]), (200, [(1, 0), (10, 100)]), (10**6, None)],
)
def test_truncate(offset: int, left: list[tuple[int, int]] | None) -> None:
    pairs = [(1, 0), (10, 100), (20, 200)]
    index = index_of(pairs)
    index.truncate(offset)
    assert entries(index) == (pairs if left is None else left)


def test_save_and_load(tmp_path: Path) -> None:
    path = str(tmp_path / "p.idx")
    pairs = [(1, 0), (10, 100), (2**63, 2**40)]
    index_of(pairs).save(path)
    assert os.path.getsize(path) == 3 * ENTRY.size
    with open(path, "rb") as f:
        assert f.read(ENTRY.size) == ENTRY.pack(1, 0)
    loaded = SparseIndex.load(path, 100)
    assert loaded is not None and entries(loaded) == pairs and loaded.interval == 100
    assert not os.path.exists(path + ".tmp")


def test_load_missing_or_partial(tmp_path: Path) -> None:
    path = tmp_path / "p.idx"
    assert SparseIndex.load(str(path), 100) is None
    path.write_bytes(ENTRY.pack(1, 0) + b"\x00" * 7)
    assert SparseIndex.load(str(path), 100) is None
    path.write_bytes(b"")
    loaded = SparseIndex.load(str(path), 100)
    assert loaded is not None and len(loaded) == 0


def test_save_new_appends_only_new_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "p.idx")
    index = SparseIndex(100)
    index.add(1, 0)
    index.save_new(path)
    assert Path(path).read_bytes() == ENTRY.pack(1, 0)
    index.save_new(path)  # nothing new
    assert os.path.getsize(path) == ENTRY.size
    index.add(5, 100)
    index.add(9, 200)
    index.save_new(path)
    assert Path(path).read_bytes() == ENTRY.pack(1, 0) + ENTRY.pack(5, 100) + ENTRY.pack(9, 200)
    loaded = SparseIndex.load(path, 100)
    assert loaded is not None
    loaded.add(12, 300)
    loaded.save_new(path)  # a loaded index knows what the file holds
    assert entries(SparseIndex.load(path, 100)) == [(1, 0), (5, 100), (9, 200), (12, 300)]  # type: ignore[arg-type]


def test_save_new_after_truncate_rewrites_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "p.idx")
    index = index_of([(1, 0), (10, 100), (20, 200)])
    index.save(path)
    index.truncate(150)
    index.add(15, 200)
    index.save_new(path)
    assert entries(SparseIndex.load(path, 100)) == [(1, 0), (10, 100), (15, 200)]  # type: ignore[arg-type]


# -- sane() against a real partition file ---------------------------------------------


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[tuple[int, int, list[int]]]:
    """A partition of ids 5..24: (fd, size, offset of each record)."""
    data, sizes = encode_batch(5, [b"m%d" % i * (i % 7 + 1) for i in range(20)])
    path = tmp_path / "p.log"
    path.write_bytes(data)
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd, len(data), offsets
    finally:
        os.close(fd)


def sane(index: SparseIndex, partition: tuple[int, int, list[int]], first_id: int = 5) -> str | None:
    fd, size, _ = partition
    return index.sane(first_id, size, lambda off: id_at(fd, off))


def test_sane_accepts_a_good_index(partition: tuple[int, int, list[int]]) -> None:
    _, size, offsets = partition
    for interval in (1, 30, 100, 10**6):
        index = SparseIndex(interval)
        for i, off in enumerate(offsets):
            index.add(5 + i, off)
        assert sane(index, partition) is None, interval
    # Every entry, and an empty index of an empty partition.
    assert sane(index_of([(5 + i, off) for i, off in enumerate(offsets)]), partition) is None
    assert SparseIndex().sane(1, 0, lambda off: None) is None


def test_sane_empty_index_of_nonempty_partition(partition: tuple[int, int, list[int]]) -> None:
    assert "empty" in (sane(SparseIndex(), partition) or "")


@pytest.mark.parametrize(
    "pairs, problem",
    [
        ([(6, 0)], "first"),
        ([(5, 10)], "first"),
        ([(4, 0)], "first"),
        ("swap", "order"),
        ("same-id", "order"),
        ("same-offset", "order"),
        ("past-end", "past the end"),
        ("at-end", "past the end"),
        ("last-wrong", "point"),
        ("last-mid-record", "point"),
        ("middle-wrong", "point"),
    ],
)
def test_sane_catches(pairs: object, problem: str, partition: tuple[int, int, list[int]]) -> None:
    _, size, offsets = partition
    good = [(5 + i, off) for i, off in enumerate(offsets)][::4]  # ids 5, 9, 13, 17, 21
    if pairs == "swap":
        bad = [good[0], good[2], good[1], *good[3:]]
    elif pairs == "same-id":
        bad = [good[0], (good[1][0], good[1][1]), (good[1][0], good[2][1]), *good[3:]]
    elif pairs == "same-offset":
        bad = [good[0], good[1], (good[2][0], good[1][1]), *good[3:]]
    elif pairs == "past-end":
        bad = [*good, (30, size + 50)]
    elif pairs == "at-end":
        bad = [*good, (25, size)]
    elif pairs == "last-wrong":
        bad = [*good[:-1], (good[-1][0] + 1, good[-1][1])]
    elif pairs == "last-mid-record":
        bad = [*good[:-1], (good[-1][0], good[-1][1] + 3)]
    elif pairs == "middle-wrong":
        mid = len(good) // 2
        bad = [*good[:mid], (good[mid][0], offsets[good[mid][0] - 5 - 1]), *good[mid + 1 :]]
    else:
        bad = pairs  # type: ignore[assignment]
    assert problem in (sane(index_of(bad), partition) or "no problem found")


def test_put_adds_whatever_the_interval_but_only_forward() -> None:
    index = SparseIndex(100)
    index.add(1, 0)
    index.put(5, 10)  # past a corrupt record: reachable only from here
    assert entries(index) == [(1, 0), (5, 10)]
    assert index.last == (5, 10)
    for id, off in [(5, 20), (6, 10), (4, 30)]:
        with pytest.raises(ValueError):
            index.put(id, off)
    assert entries(index) == [(1, 0), (5, 10)]
    with pytest.raises(KeyError):
        SparseIndex().last


@pytest.mark.parametrize("interval", [1, 50, 100, 4096])
def test_add_run_makes_the_entries_add_would(interval: int) -> None:
    import random

    rng = random.Random(interval)
    by_add, by_run = SparseIndex(interval), SparseIndex(interval)
    first, pos = 1, 0
    for _ in range(50):  # MSGs of 1..20 records of 1..300 bytes
        sizes = [rng.randint(1, 300) for _ in range(rng.randint(1, 20))]
        starts = [pos]
        for s in sizes:
            starts.append(starts[-1] + s)
        for k in range(len(sizes)):
            by_add.add(first + k, starts[k])
        by_run.add_run(first, starts, len(sizes))
        first, pos = first + len(sizes), starts[-1]
    assert entries(by_run) == entries(by_add)
    assert entries(by_run)[0] == (1, 0)
