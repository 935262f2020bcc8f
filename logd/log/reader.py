"""The read side of a data directory: partitions, positions, cursors.

``LogReader`` knows the partitions (``partition.py``) and their sparse
indexes, finds any id (``locate``: an index bisect, then a short walk of
record headers), and hands out ``Cursor`` objects (``cursor.py``) that yield
sendable ranges. ``FileLog`` (``file.py``), the one writer, is built on it.

Opened by itself, ``LogReader(directory)`` is the log **read-only**, after
ZODB's ``read_only=True``: no lock, no repair, no deletes, nothing written.
A missing or stale ``.idx`` is rebuilt in memory only; a torn or
half-written tail is simply not visible yet. ``refresh()`` picks up what
another process appended since: whole MSGs only (the ``more`` field of the
record header says where a MSG ends), new partitions once they follow the
last one, and the loss of partitions its retention deleted. Every write
raises ``Refused``. Limits, for now: the read-only open trusts sane indexes
(the writer's ``--verify-on-start tail``) and does not serve around
corruption; a bad record it meets is a ``CorruptLogError``.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from typing import Any, Sequence

from ..errors import CorruptLogError, NotRetained, Refused, StorageError
from ..record import Record, RecordError, parse, pread_header
from .cursor import Cursor
from .index import SparseIndex
from .meta import Meta
from .meta import load as load_meta
from .partition import Partition, id_at, parse_name, walk
from .recovery import Corrupt, verify_partition

__all__ = ["LogReader"]


class LogReader:
    def __init__(self, directory: str, index_interval: int = 4096) -> None:
        self.directory = os.path.abspath(directory)
        self.index_interval = index_interval
        self._corrupt: list[Corrupt] = []
        self._partitions: list[Partition] = []
        self._firsts: list[int] = []  # first ids, for bisect
        self._read_fds: dict[int, int] = {}
        self._head = 0
        self._synced = 0
        self._synced_pos: tuple[int, int] = (0, 0)
        self._open()

    # -- opening: read-only (FileLog overrides this with its lock and recovery) -----

    def _open(self) -> None:
        if not os.path.isdir(self.directory):
            raise StorageError(f"data dir {self.directory} does not exist")
        # The directory's identity, if it has one yet (a replica's REPLICATE
        # handshake names it); loading reads only. Raises MetaError if bad.
        self.meta: Meta | None = load_meta(self.directory)
        self.refresh()

    def refresh(self) -> int:
        """Take in what the writer appended since: whole MSGs and the partitions
        that follow; forget partitions its retention deleted. Returns the head.

        Raises:
            CorruptLogError: bad bytes that are not a tail still being written,
                or a partition that does not follow the one before it.
        """
        found = sorted(
            (parsed, name) for name in os.listdir(self.directory)
            if (parsed := parse_name(name)) is not None
        )
        present = {name for _, name in found}
        parts = self._partitions
        # Retention deletes from the front; a writer's restart may remove an
        # empty last partition (its next roll makes one anew).
        while parts and os.path.basename(parts[0].path) not in present:
            self._forget(parts.pop(0))
        while parts and parts[-1].size == 0 and os.path.basename(parts[-1].path) not in present:
            self._forget(parts.pop())
        # Whatever raises, what was verified so far is what the state shows:
        # the head, the first ids and the partitions never disagree.
        try:
            if parts:
                try:
                    self._extend(parts[-1])
                except FileNotFoundError:  # removed since the listing: the next refresh knows
                    pass
            for (number, first_id), name in found:
                if parts and number <= parts[-1].number:
                    continue
                if parts:
                    prev = parts[-1]
                    if number != prev.number + 1 or first_id != prev.last_id + 1:
                        raise CorruptLogError(
                            f"partition {name} does not follow partition {prev.number} "
                            f"(which ends at id {prev.last_id})", partition=number)
                p = Partition(number, first_id, os.path.join(self.directory, name), 0, first_id - 1,
                              SparseIndex(self.index_interval))
                try:
                    self._extend(p)
                except FileNotFoundError:  # deleted since the listing
                    continue
                parts.append(p)
        finally:
            self._firsts = [p.first_id for p in parts]
            if parts:
                self._head = self._synced = parts[-1].last_id
                self._synced_pos = (parts[-1].number, parts[-1].size)
        return self._head

    def _forget(self, p: Partition) -> None:
        fd = self._read_fds.pop(p.number, None)
        if fd is not None:
            os.close(fd)

    def _extend(self, p: Partition) -> None:
        """Move ``p``'s visible end to its last whole MSG; index what is new (in memory)."""
        if p.size == 0:
            # A writer's restart removes an empty last partition, and its next
            # roll may make it anew: follow the name, not an fd of the old file.
            self._forget(p)
        fd = self._read_fd(p)
        size = os.fstat(fd).st_size
        if size <= p.size:
            return
        start, next_id = p.size, p.last_id + 1  # a MSG boundary
        if start == 0:
            loaded = SparseIndex.load(p.idx_path, self.index_interval)
            if loaded is not None and len(loaded) and loaded.sane(
                    p.first_id, size, lambda o: id_at(fd, o)) is None:
                p.index = loaded
                start, next_id = loaded.offsets[-1], loaded.ids[-1]
        name = os.path.basename(p.path)

        def refuse(bad: Corrupt, reason: str) -> None:
            raise CorruptLogError(
                f"partition {name} has a bad record at offset {bad.start} (id {bad.first}): {reason}",
                partition=p.number, offset=bad.start, id=bad.first)

        # A tail that ends inside a MSG is a writer mid-write: not visible yet.
        v = verify_partition(fd, p.path, p.number, size, p.index, start, next_id, repair=False,
                             first_id=p.first_id, mid_msg=start != p.size, on_corrupt=refuse)
        end = v.damage_at[0] if v.damage else v.end
        # Entries past the visible end may name records a writer's recovery cuts.
        p.index.truncate(end)
        p.size, p.last_id = end, v.last_id

    # -- state ----------------------------------------------------------------------

    def head(self) -> int:
        return self._head

    def first_id(self) -> int:
        return self._partitions[0].first_id if self._partitions else 1

    def synced_head(self) -> int:
        return self._synced

    def partitions(self) -> list[Partition]:
        return list(self._partitions)

    def stats(self) -> dict[str, object]:
        return {
            "partitions": len(self._partitions),
            "active_partition": self._partitions[-1].number if self._partitions else 0,
            "bytes": sum(p.size for p in self._partitions),
            "corrupt_records": sum(c.last - c.first + 1 for c in self._corrupt),
        }

    # -- finding records ----------------------------------------------------------------

    def _partition_of(self, id: int) -> Partition:
        i = bisect_right(self._firsts, id) - 1
        if i < 0:
            raise KeyError(id)
        return self._partitions[i]

    def _read_fd(self, p: Partition) -> int:
        fd = self._read_fds.get(p.number)
        if fd is None:
            fd = self._read_fds[p.number] = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def locate(self, id: int) -> tuple[Partition, int]:
        """The partition holding ``id`` and the offset of its record.

        ``id`` may be head+1: the end of the active partition.
        """
        active = self._partitions[-1]
        if id == self._head + 1:
            return active, active.size
        if id == self._synced + 1 and self._synced_pos[0] == active.number:
            return active, self._synced_pos[1]
        p = self._partition_of(id)
        if id == p.last_id + 1:
            return p, p.size
        for bad in self._corrupt:
            if bad.first == id:
                return p, bad.start
        return p, self.offset_in(p, self._read_fd(p), id)

    def offset_in(self, p: Partition, fd: int, id: int) -> int:
        """Offset of record ``id`` of ``p``, read through ``fd`` (which may be
        a cursor's, of a partition retention deleted)."""
        # Even an exact index hit is checked against the record header: the
        # index is a cache, and a wrong entry must not serve a wrong record.
        entry_id, off = p.index.floor(id)
        try:
            off, _ = walk(fd, off, entry_id, id, p.size)
            h = pread_header(fd, off)
            if h is None or h.id != id:
                raise RecordError(f"expected id {id}", off)
        except RecordError as exc:
            raise CorruptLogError(
                f"{exc.reason} at offset {exc.offset}", partition=p.number, offset=exc.offset, id=id
            ) from None
        return off

    def position(self, id: int) -> tuple[int, int]:
        """``(partition number, offset)`` where record ``id`` starts; ``id`` may be head+1."""
        if not self._partitions:  # a read-only open of a directory nobody wrote yet
            return 1, 0  # where a new log's first record goes (as FileLog and MemoryLog say)
        p, offset = self.locate(id)
        return p.number, offset

    def following(self, p: Partition) -> Partition:
        """The partition after ``p``, found by id (never by a list position held
        across a yield: retention pops partitions from the front, issue 7 item 3).

        Raises:
            NotRetained: retention deleted it.
        """
        next_id = p.last_id + 1
        i = bisect_right(self._firsts, next_id) - 1
        if i < 0 or self._partitions[i].first_id != next_id:
            raise NotRetained(f"records from {next_id} were deleted by retention",
                              first=self.first_id(), head=self._head)
        return self._partitions[i]

    def corrupt_between(self, start: int, end: int) -> Corrupt | None:
        """The first known-bad range overlapping ids ``[start, end)``."""
        for bad in self._corrupt:
            if bad.first < end and bad.last >= start:
                return bad
        return None

    # -- reading ----------------------------------------------------------------------

    def cursor(self, start: int) -> Cursor:
        """A cursor before record ``start``; it opens nothing until read."""
        return Cursor(self, start)

    def read(self, start: int, end: int) -> list[Record]:
        end = min(end, self._head + 1)
        out: list[Record] = []
        if start >= end:
            return out
        with self.cursor(start) as cursor:
            for fd, off, length in cursor.ranges(end):
                data = os.pread(fd, length, off)
                pos = 0
                while pos < len(data):
                    got = parse(data, pos)
                    if got is None:
                        raise CorruptLogError(f"incomplete record in {self.directory} at {off + pos}")
                    out.append(got[0])
                    pos = got[1]
        return out

    # -- writes: refused here -------------------------------------------------------

    def _refuse(self) -> Refused:
        return Refused("this log is open read-only: it takes no writes")

    def append(self, bodies: Sequence[bytes]) -> int:
        raise self._refuse()

    def begin_sync(self) -> Any:
        raise self._refuse()

    def end_sync(self, point: Any) -> None:
        raise self._refuse()

    def fail_sync(self, exc: BaseException) -> StorageError:
        raise self._refuse()

    def close(self) -> None:
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
