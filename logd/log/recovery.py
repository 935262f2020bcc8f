"""Opening a partition: verify it, rebuild its index, and cut a torn tail.

After Kafka's log recovery: scan records checking size and CRC, truncate the
active partition after its last valid record, rebuild the index. Two rules
of our own:

- A MSG is all or nothing: if the last MSG in the active partition lost its
  final records (``more`` > 0 on the last good record), the whole MSG is cut.
- A bad record that is followed by valid records is corruption, not a torn
  tail: the server refuses to start (naming partition, offset and id) unless
  ``allow_corrupt``, in which case the bad record is skipped and remembered
  so that READ reports it instead of sending it.

Bytes cut off are first copied aside to ``<partition>.trunc.N``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Callable

import structlog

from ..errors import CorruptLogError
from ..fsutil import fsync_dir
from ..record import RecordError, parse
from .index import SparseIndex
from .marks import CleanEntry
from .partition import Partition, id_at, resync, scan

__all__ = ["Corrupt", "Verified", "verify_partition", "recover_partition", "trust_clean", "truncate_aside"]

log = structlog.get_logger("logd.log")


@dataclass(frozen=True, slots=True)
class Corrupt:
    """Ids ``first..last`` of ``partition`` cannot be read: bytes ``start..end`` are bad."""

    first: int
    last: int
    partition: int
    start: int
    end: int


@dataclass(slots=True)
class Recovered:
    corrupt: list[Corrupt] = field(default_factory=list)
    bytes_dropped: int = 0
    bad_tail: tuple[int, int] | None = None  # (offset, first bad id) of a sealed partition


def trust_clean(p: Partition, entry: CleanEntry, interval: int) -> str | None:
    """After a clean stop: fill in ``p`` from its clean-marker entry if the file
    agrees with it (size, and the last record: id, CRC, end of MSG, end of
    file) and its index is sane. Returns what disagrees, or None. Reads one
    record and one header per index entry, not the partition."""
    fd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if entry.first_id != p.first_id:
            return f"first id {p.first_id}, the marker says {entry.first_id}"
        if size != entry.size:
            return f"size {size}, the marker says {entry.size}"
        if size == 0:
            if entry.last_id != p.first_id - 1:
                return "empty, the marker says it is not"
            p.size, p.last_id, p.index = 0, entry.last_id, SparseIndex(interval)
            return None
        if not 0 <= entry.last_offset < size:
            return f"last record offset {entry.last_offset} is outside the file"
        data = os.pread(fd, size - entry.last_offset, entry.last_offset)
        try:
            got = parse(data)
        except RecordError as exc:
            return f"last record at offset {entry.last_offset}: {exc.reason}"
        if got is None or got[1] != len(data) or got[0].id != entry.last_id or got[0].more:
            return f"last record at offset {entry.last_offset} is not id {entry.last_id} ending the file"
        loaded = SparseIndex.load(p.idx_path, interval)
        if loaded is None or not len(loaded):
            return "index: missing"
        problem = loaded.sane(p.first_id, size, lambda o: id_at(fd, o))
        if problem is not None:
            return f"index: {problem}"
        p.size, p.last_id, p.index = size, entry.last_id, loaded
        return None
    finally:
        os.close(fd)


@dataclass(slots=True)
class Verified:
    """What ``verify_partition`` found in one partition file."""

    size: int  # the file's size, after the cut when one was made
    last_id: int  # the last id that can be read (the end of the last whole MSG when damaged)
    end: int  # offset after the last good record (before any cut)
    corrupt: list[Corrupt] = field(default_factory=list)  # bad records with good ones after
    damage: str | None = None  # why the file does not end with a whole MSG
    damage_at: tuple[int, int] = (0, 0)  # (offset, id) where the whole MSGs end
    cut: tuple[int, str] | None = None  # (bytes dropped, saved aside as) when repaired


def verify_partition(
    fd: int, path: str, number: int, size: int, index: SparseIndex, start: int, next_id: int,
    *, repair: bool, first_id: int = 0, mid_msg: bool = False,
    on_corrupt: Callable[[Corrupt, str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Verified:
    """Verify a partition's records from ``start`` (record ``next_id``) to
    ``size``, adding them to ``index``: the one routine behind start-up
    recovery and ``logd check``.

    A bad record followed by valid ones is corruption: ``on_corrupt(bad,
    reason)`` is told (it may raise to stop), the index gets an entry past it
    and the scan goes on. What ends the file short of a whole MSG is the
    damage. ``repair`` (the active partition at start-up, ``check --fix`` on
    the last one) cuts that tail, copied aside first; otherwise it is only
    reported. ``mid_msg``: ``start`` may be inside a MSG (an index entry), so
    a torn MSG beginning there is rescanned from offset 0 (``first_id``).
    """
    result = scan(fd, start, size, next_id, index.add_run, progress)
    if mid_msg and start and result.torn_batch and result.batch_end == start:
        index.truncate(0)  # the torn MSG began before the entry: scan it whole
        result = scan(fd, 0, size, first_id, index.add_run, progress)
    corrupt: list[Corrupt] = []
    while result.error is not None and not result.error.torn:
        bad_id = result.last_id + 1
        at = resync(fd, result.error.offset + 1, size, bad_id + 1)
        if at is None:
            break  # nothing valid follows: a torn tail after all
        bad = Corrupt(bad_id, bad_id, number, result.error.offset, at)
        if on_corrupt is not None:
            on_corrupt(bad, result.error.reason)
        corrupt.append(bad)
        index.put(bad_id + 1, at)
        result = scan(fd, at, size, bad_id + 1, index.add_run, progress)
    out = Verified(size, result.last_id, result.end, corrupt)
    if result.error is not None or result.torn_batch:
        out.damage = result.error.reason if result.error else "last MSG incomplete"
        out.damage_at = (result.batch_end, result.batch_last_id + 1)
        out.last_id = result.batch_last_id
        if repair:
            out.cut = truncate_aside(path, result.batch_end, size)
            out.size = result.batch_end
            index.truncate(out.size)
    return out


def recover_partition(
    p: Partition, active: bool, full: bool, allow_corrupt: bool, interval: int,
    start: tuple[int, int] | None = None, progress: Callable[[int], None] | None = None,
) -> Recovered:
    """Fill in ``p.size``, ``p.last_id`` and ``p.index``; cut a torn active tail.

    ``full`` verifies every record; otherwise a sane index is trusted and only
    records after its last entry are verified, or, given ``start`` (offset,
    id of the record ending there: a recovery point), only records after it.

    Raises:
        CorruptLogError: corruption that is not a torn tail, without ``allow_corrupt``.
    """
    out = Recovered()
    name = os.path.basename(p.path)

    def on_corrupt(bad: Corrupt, reason: str) -> None:
        if not allow_corrupt:
            raise CorruptLogError(
                f"partition {name} has a bad record at offset "
                f"{bad.start} (id {bad.first}): {reason}; valid records "
                "follow it, so this is not a torn tail. Run `logd check`, or start with "
                "--allow-corrupt to serve around it",
                partition=p.number,
                offset=bad.start,
                id=bad.first,
            )
        log.error("corrupt_record", partition=p.number, offset=bad.start, id=bad.first,
                  reason=reason)

    fd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        loaded = SparseIndex.load(p.idx_path, interval)
        saved_entries = len(loaded) if loaded is not None else -1
        if loaded is not None:
            problem = loaded.sane(p.first_id, size, lambda o: id_at(fd, o))
        elif os.path.exists(p.idx_path):
            problem = "not a whole number of entries"
        else:
            problem = "missing"
        if problem is not None and problem != "missing":
            log.warning("index_ignored", partition=p.number, reason=problem)
        if start is not None and not full:
            off, last = start
            if off > size or (off < size and id_at(fd, off) != last + 1):
                log.warning("recovery_point_ignored", partition=p.number, offset=off, id=last,
                            reason="the partition does not have record %d ending there" % last)
                full = True
        if full or problem is not None or loaded is None or not len(loaded):
            p.index = SparseIndex(interval)
            from_off, from_id, mid_msg = 0, p.first_id, False
        elif start is not None:  # the index is sane and the point agrees with the file
            p.index = loaded
            from_off, from_id, mid_msg = start[0], start[1] + 1, False
            p.index.truncate(from_off + 1)
        else:
            p.index = loaded
            from_id, from_off = loaded.last
            mid_msg = True
            progress = None  # a few records: not worth reporting
        found = verify_partition(fd, p.path, p.number, size, p.index, from_off, from_id,
                                 repair=active, first_id=p.first_id, mid_msg=mid_msg,
                                 on_corrupt=on_corrupt, progress=progress)
        out.corrupt = found.corrupt
    finally:
        os.close(fd)
    # After an unclean stop what we read may be only in the page cache: make it
    # durable before anyone is told it is (synced_head starts at head). Cheap
    # for a file with nothing dirty (or just cut: truncate_aside synced it).
    fd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    reason = found.damage
    bad_at, bad_id = found.damage_at
    if reason is not None and not active:
        # A sealed partition ends with a whole MSG; anything else is damage.
        if not allow_corrupt:
            raise CorruptLogError(
                f"sealed partition {name} is damaged at offset {bad_at} (id {bad_id}): {reason}",
                partition=p.number,
                offset=bad_at,
                id=bad_id,
            )
        out.bad_tail = (bad_at, bad_id)
        log.error("corrupt_tail", partition=p.number, offset=bad_at, reason=reason)
    if found.cut is not None:
        out.bytes_dropped, aside = found.cut
        log.warning("tail_truncated", partition=p.number, offset=bad_at,
                    bytes_dropped=out.bytes_dropped, reason=reason,
                    last_id=bad_id - 1, saved_to=aside)
    p.size = found.size
    p.last_id = found.last_id
    if p.index is not loaded or len(p.index) != saved_entries or reason is not None:
        p.index.save(p.idx_path)
    return out


def truncate_aside(path: str, end: int, size: int) -> tuple[int, str]:
    """Copy bytes ``end..size`` of ``path`` to ``path.trunc.N``, then cut the file."""
    n = 0
    while os.path.exists(f"{path}.trunc.{n}"):
        n += 1
    with open(path, "rb") as src, open(f"{path}.trunc.{n}", "wb") as dst:
        src.seek(end)
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    fsync_dir(os.path.dirname(path))  # the copy's name must survive a crash before the cut does
    with open(path, "r+b") as f:
        f.truncate(end)
        os.fsync(f.fileno())
    return size - end, f"{path}.trunc.{n}"
