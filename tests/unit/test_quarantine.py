"""FileLog.quarantine_from: the divergent suffix moved aside, the copy cut
before it (later partitions removed, the one holding the point truncated),
under the same writer lock; the reopened log verifies and goes on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logd.log.lock import DirectoryLocked
from logd.log.file import FileLog
from logd.log.meta import Meta, load, save
from logd.log.partition import parse_name
from logd.record import parse
from logd.tools import dump


def _log(tmp_path: Path) -> FileLog:
    log = FileLog(str(tmp_path / "copy"), partition_size=200, fsync=False)
    for i in range(1, 41):
        log.append([b"body %d" % i])
    m = log.meta
    save(log.directory, Meta(m.format, m.history, m.created, m.role, ((1, 1), (2, 30), (3, 35))))
    log.meta = load(log.directory)  # type: ignore[assignment]
    return log


def _records(path: str) -> list[tuple[int, bytes]]:
    data, pos, out = open(path, "rb").read(), 0, []
    while pos < len(data):
        got = parse(data, pos)
        assert got is not None
        rec, pos = got
        out.append((rec.id, rec.body))
    return out


@pytest.mark.parametrize("where", ["mid-partition", "partition start"])
def test_quarantine_moves_the_suffix_and_cuts_before_it(tmp_path: Path, where: str) -> None:
    log = _log(tmp_path)
    parts = log.partitions()
    assert len(parts) >= 4
    point = parts[2].first_id + (3 if where == "mid-partition" else 0)
    path, moved, lock = log.quarantine_from(point, 1)
    assert (os.path.basename(path), moved) == (f"quarantine-1-{point}-40.log", 41 - point)
    assert _records(path) == [(i, b"body %d" % i) for i in range(point, 41)]
    assert dump(path, open(os.devnull, "w")) == 0
    # The lock is still held: nobody else may open the directory as a writer.
    with pytest.raises(DirectoryLocked):
        FileLog(log.directory)
    again = FileLog(log.directory, partition_size=200, fsync=False, lock=lock)
    try:
        assert again.head() == point - 1
        names = sorted(n for n in os.listdir(log.directory) if parse_name(n))
        assert all(parse_name(n)[1] <= point for n in names)  # type: ignore[index]
        assert [r.body for r in again.read(point - 2, point)] == [b"body %d" % (point - 2),
                                                                  b"body %d" % (point - 1)]
        assert again.meta.epochs == tuple(e for e in ((1, 1), (2, 30), (3, 35)) if e[1] < point)
        assert again.append([b"next"]) == point
    finally:
        again.close()
    reopened = FileLog(log.directory, partition_size=200, fsync=False)  # clean, after the cut
    assert reopened.head() == point
    reopened.close()


def test_quarantine_refuses_an_id_it_does_not_hold(tmp_path: Path) -> None:
    log = _log(tmp_path)
    with pytest.raises(ValueError):
        log.quarantine_from(41, 1)
    log.close()
