"""A reader's place in the partition files: sendable ranges, not records.

A ``Cursor`` stands before record ``next_id``. ``ranges(end)`` yields the
stored bytes of ids ``[next_id, end)`` as ``(fd, offset, count)``, one range
per partition, ready for ``os.sendfile``; the bytes are the records exactly
as READ sends them. The cursor owns its descriptor: one, of the partition it
is in, opened at its first range (a cursor never read holds none) and
closed when it moves on or is closed. A range's fd stays valid until the
caller comes back for the next one.

Retention may delete partitions at any time, the one the cursor is in
included. The cursor finishes that one from its open fd (the index of a
deleted partition stays in memory with it), then goes on with the partition
that starts with the next id, found by id, or raises ``NotRetained`` naming
the first missing id. Known-bad records (``--allow-corrupt``) are never
sent: the cursor stops before one and raises ``CorruptLogError``.

No gevent, no sockets: the adapter (``stream.py``) sends what it is given.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

from ..errors import CorruptLogError, InvalidArgument, NotRetained
from ..record import Header, RecordError, pread_header
from .partition import Partition, id_at

if TYPE_CHECKING:
    from .reader import LogReader

__all__ = ["Cursor"]


class Cursor:
    """A place in a ``LogReader``'s partitions; see the module docstring."""

    def __init__(self, reader: "LogReader", next_id: int) -> None:
        self._reader = reader
        self.next_id = next_id
        self._part: Partition | None = None  # the partition we are in, once entered
        self._fd = -1
        self._offset = 0  # of next_id in _part

    # -- positioning ----------------------------------------------------------------

    def seek(self, id: int) -> None:
        """Stand before record ``id`` (READ). Files are opened at the next range."""
        self._release()
        self.next_id = id

    def seek_position(self, partition: int, offset: int) -> None:
        """Stand at ``offset`` of partition ``partition``: a record start or its end.

        Raises:
            NotRetained: retention deleted that partition.
            InvalidArgument: no such partition yet, or no record starts there.
        """
        reader = self._reader
        parts = reader.partitions()
        if parts and partition < parts[0].number:
            raise NotRetained(f"partition {partition} was deleted by retention",
                              first=reader.first_id(), head=reader.head())
        found = [p for p in parts if p.number == partition]
        if not found or not 0 <= offset <= found[0].size:
            raise InvalidArgument(f"no position {partition}:{offset} in this log")
        p = found[0]
        self._release()
        self._enter(p, offset, p.first_id)  # next_id is corrected below
        if offset == p.size:
            self.next_id = p.last_id + 1
            return
        id = id_at(self._fd, offset)
        # A header-like body byte sequence is not a record start: check it by id.
        if id is None or not p.first_id <= id <= p.last_id or reader.locate(id)[1] != offset:
            self._release()
            raise InvalidArgument(f"no record starts at {partition}:{offset}")
        self.next_id = id

    @property
    def position(self) -> tuple[int, int]:
        """``(partition, offset)`` where record ``next_id`` starts."""
        if self._part is not None:
            return self._part.number, self._offset
        p, offset = self._reader.locate(self.next_id)
        return p.number, offset

    @property
    def partition(self) -> tuple[int, int] | None:
        """``(number, first id)`` of the partition the cursor is in, once entered
        (REPLICATE names it in its frames as the ranges move on)."""
        p = self._part
        return (p.number, p.first_id) if p is not None else None

    def header_before(self) -> Header | None:
        """The header of record ``next_id - 1`` (REPLICATE compares its CRC with a
        follower's last record), or None when it is not retained.

        Raises:
            CorruptLogError: its index points at no such record.
        """
        reader = self._reader
        id = self.next_id - 1
        if id < max(1, reader.first_id()):
            return None
        p, offset = reader.locate(id)
        try:
            fd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None  # deleted by retention since
        try:
            h = pread_header(fd, offset)
        except RecordError:
            h = None
        finally:
            os.close(fd)
        if h is None or h.id != id:
            raise CorruptLogError(f"record {id} not found at partition {p.number} offset {offset}",
                                  partition=p.number, offset=offset, id=id)
        return h

    # -- reading ----------------------------------------------------------------------

    def ranges(self, end: int) -> Iterator[tuple[int, int, int]]:
        """``(fd, offset, count)`` of the records ``[next_id, end)``, ``end`` at
        most head+1; ``next_id`` moves past each range when the caller comes back.

        Raises:
            NotRetained: retention deleted records before they were reached.
            CorruptLogError: a known-bad record is next (after what comes before it).
            OSError: a partition could not be opened (e.g. EMFILE).
        """
        reader = self._reader
        end = min(end, reader.head() + 1)
        bad = reader.corrupt_between(self.next_id, end)
        stop = max(bad.first, self.next_id) if bad is not None else end
        while self.next_id < stop:
            p = self._part
            if p is None:
                self._enter_by_id()
                continue
            if self.next_id == p.last_id + 1:  # at the end of a sealed partition
                self._enter_following(p)
                continue
            upto = min(stop, p.last_id + 1)
            if upto == p.last_id + 1:
                until = p.size
            elif p.first_id >= reader.first_id():
                until = reader.locate(upto)[1]
            else:  # deleted: our fd and its index are all that is left
                until = reader.offset_in(p, self._fd, upto)
            fd, offset = self._fd, self._offset
            yield fd, offset, until - offset
            self.next_id, self._offset = upto, until
        if bad is not None:
            raise CorruptLogError(
                f"record {stop} in partition {bad.partition} at offset {bad.start} "
                "fails its checks; it cannot be served",
                partition=bad.partition, offset=bad.start, id=stop,
            )

    def _enter_by_id(self) -> None:
        reader = self._reader
        if self.next_id < reader.first_id():
            raise self._gone(self.next_id)
        p, offset = reader.locate(self.next_id)
        self._enter(p, offset, self.next_id)

    def _enter_following(self, p: Partition) -> None:
        nxt = self._reader.following(p)
        self._release()
        self._enter(nxt, 0, nxt.first_id)

    def _enter(self, p: Partition, offset: int, first: int) -> None:
        try:
            self._fd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Deleted since it was found: its records are gone, from ours on.
            raise self._gone(first) from None
        self._part, self._offset = p, offset

    def _gone(self, id: int) -> NotRetained:
        reader = self._reader
        return NotRetained(f"records from {id} were deleted by retention",
                           first=reader.first_id(), head=reader.head())

    # -- closing ----------------------------------------------------------------------

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._part = None

    def close(self) -> None:
        self._release()

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
