"""recovery.verify_partition: the one routine behind start-up recovery and
``logd check`` (report only, or repair), on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logd.errors import CorruptLogError
from logd.log.index import SparseIndex
from logd.log.recovery import Corrupt, verify_partition
from logd.record import encode_batch

MSGS = [[b"a" * 50, b"b" * 60], [b"c" * 70], [b"d" * 10, b"e" * 20, b"f" * 30]]


def build(tmp_path: Path) -> tuple[Path, bytes, list[int]]:
    data, starts, first = b"", [], 1
    for bodies in MSGS:
        chunk, sizes = encode_batch(first, bodies)
        for s in sizes:
            starts.append(len(data))
            data += chunk[:s]
            chunk = chunk[s:]
        first += len(bodies)
    path = tmp_path / "0000000000-00000000000000000001.log"
    path.write_bytes(data)
    return path, data, starts


def run(path: Path, repair: bool, **kw):
    fd = os.open(path, os.O_RDONLY)
    try:
        index = SparseIndex(1)
        size = os.fstat(fd).st_size
        return verify_partition(fd, str(path), 0, size, index, 0, 1, repair=repair, **kw), index
    finally:
        os.close(fd)


def test_sound_partition(tmp_path: Path) -> None:
    path, data, starts = build(tmp_path)
    seen: list[int] = []
    found, index = run(path, False, progress=seen.append)
    assert (found.last_id, found.size, found.damage, found.corrupt, found.cut) == (6, len(data), None, [], None)
    assert sum(seen) == len(data)
    assert list(index.offsets) == starts


@pytest.mark.parametrize("repair", [False, True])
def test_torn_msg_reported_or_cut(tmp_path: Path, repair: bool) -> None:
    path, data, starts = build(tmp_path)
    path.write_bytes(data[: starts[5] + 3])  # the last MSG lost its last record
    found, index = run(path, repair)
    assert found.damage == "incomplete record"
    assert found.damage_at == (starts[3], 4) and found.last_id == 3
    if repair:
        assert found.cut is not None and found.cut[0] == starts[5] + 3 - starts[3]
        assert path.read_bytes() == data[: starts[3]]
        assert Path(found.cut[1]).read_bytes() == data[starts[3] : starts[5] + 3]
        assert found.size == starts[3] and list(index.offsets) == starts[:3]
    else:
        assert found.cut is None and found.size == starts[5] + 3
        assert path.read_bytes() == data[: starts[5] + 3]
        assert not list(tmp_path.glob("*.trunc.*"))


def test_corrupt_middle_record_is_reported_and_skipped(tmp_path: Path) -> None:
    path, data, starts = build(tmp_path)
    bad = bytearray(data)
    bad[starts[2] + 20] ^= 1  # a body byte of record 3
    path.write_bytes(bytes(bad))
    told: list[tuple[Corrupt, str]] = []
    found, index = run(path, True, on_corrupt=lambda c, r: told.append((c, r)))
    assert told == [(Corrupt(3, 3, 0, starts[2], starts[3]), "checksum mismatch for id 3")]
    assert found.corrupt == [told[0][0]]
    assert found.damage is None and found.last_id == 6 and found.cut is None
    assert (4, starts[3]) in zip(index.ids, index.offsets)
    assert path.read_bytes() == bytes(bad)  # never removes data from the middle


def test_on_corrupt_may_stop_the_scan(tmp_path: Path) -> None:
    path, data, starts = build(tmp_path)
    bad = bytearray(data)
    bad[starts[1] + 1] = ord("x")
    path.write_bytes(bytes(bad))

    def refuse(c: Corrupt, reason: str) -> None:
        raise CorruptLogError(reason, partition=c.partition, offset=c.start, id=c.first)

    with pytest.raises(CorruptLogError) as info:
        run(path, True, on_corrupt=refuse)
    assert (info.value.offset, info.value.id) == (starts[1], 2)


def test_mid_msg_start_rescans_a_torn_msg_whole(tmp_path: Path) -> None:
    path, data, starts = build(tmp_path)
    path.write_bytes(data[: starts[5] + 3])
    fd = os.open(path, os.O_RDONLY)
    try:
        index = SparseIndex(1)
        for id, off in enumerate(starts[:5], 1):
            index.add(id, off)
        # start at record 5, inside the torn MSG 4..6: it must be cut from record 4
        found = verify_partition(fd, str(path), 0, starts[5] + 3, index, starts[4], 5,
                                 repair=False, first_id=1, mid_msg=True)
    finally:
        os.close(fd)
    assert found.damage_at == (starts[3], 4) and found.last_id == 3
