"""MemoryLog: the reference ``Log``, for tests. Its records live in an anonymous memfd.

The bytes are kept in a memory file (``os.memfd_create``) rather than a
list, so that its cursors yield ``(fd, offset, count)`` like FileLog's and the
stream adapter has one send path, ``sendfile``, for both (a socket adapter
that branched on the kind of log would be tested on one branch only).
"""

from __future__ import annotations

import os
import tempfile
from array import array
from bisect import bisect_left
from typing import Iterator, Sequence

from ..errors import FsyncFailed, InvalidArgument, NotRetained
from ..record import Record, encode_batch, iter_records

__all__ = ["MemoryLog"]


def _memory_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("logd-memory-log", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as f:  # elsewhere: an unlinked file does as well
        return os.dup(f.fileno())


class _Point:
    def __init__(self, head: int) -> None:
        self.head = head

    def run(self) -> None:
        pass


class MemoryLog:
    def __init__(self) -> None:
        self._fd = _memory_file()
        self._starts = array("Q")  # offset of each record; the file's size after the last
        self._size = 0
        self._synced = 0
        self._first = 1

    def head(self) -> int:
        return self._first + len(self._starts) - 1

    def first_id(self) -> int:
        return self._first

    def synced_head(self) -> int:
        return self._synced

    def append(self, bodies: Sequence[bytes]) -> int:
        data, sizes = encode_batch(self.head() + 1, bodies)  # raises before writing: all or nothing
        os.pwrite(self._fd, data, self._size)
        for size in sizes:
            self._starts.append(self._size)
            self._size += size
        return self.head()

    def begin_sync(self) -> _Point:
        return _Point(self.head())

    def end_sync(self, point: _Point) -> None:
        self._synced = max(self._synced, point.head)

    def offset(self, id: int) -> int:
        """Where record ``id`` starts; ``id`` may be head+1."""
        i = id - self._first
        return self._starts[i] if i < len(self._starts) else self._size

    def position(self, id: int) -> tuple[int, int]:
        return 1, self.offset(id)

    def cursor(self, start: int) -> "_MemoryCursor":
        return _MemoryCursor(self, start)

    def read(self, start: int, end: int) -> list[Record]:
        end = min(end, self.head() + 1)
        if start >= end:
            return []
        a, b = self.offset(start), self.offset(end)
        return [rec for _, rec in iter_records(os.pread(self._fd, b - a, a))]

    def stats(self) -> dict[str, object]:
        return {"partitions": 1, "bytes": self._size}

    def close(self) -> None:
        pass  # the memory file goes with the object, and cursors hold their own

    def __del__(self) -> None:
        os.close(self._fd)

    def fail_sync(self, exc: BaseException) -> FsyncFailed:
        return FsyncFailed(str(exc))


class _MemoryCursor:
    """The Cursor of a MemoryLog: one partition, numbered 1; nothing is ever deleted."""

    def __init__(self, log: MemoryLog, next_id: int) -> None:
        self._log = log
        self.next_id = next_id
        self._fd = -1

    def seek(self, id: int) -> None:
        self.next_id = id

    def seek_position(self, partition: int, offset: int) -> None:
        log = self._log
        i = bisect_left(log._starts, offset)
        if partition != 1 or not (offset == log._size or (i < len(log._starts) and log._starts[i] == offset)):
            raise InvalidArgument(f"no position {partition}:{offset} in this log")
        self.next_id = log._first + i

    @property
    def position(self) -> tuple[int, int]:
        return self._log.position(self.next_id)

    def ranges(self, end: int) -> Iterator[tuple[int, int, int]]:
        log = self._log
        if self.next_id < log.first_id():
            raise NotRetained(f"records from {self.next_id} were deleted by retention",
                              first=log.first_id(), head=log.head())
        end = min(end, log.head() + 1)
        if end <= self.next_id:
            return
        if self._fd < 0:
            self._fd = os.dup(log._fd)
        start = log.offset(self.next_id)
        yield self._fd, start, log.offset(end) - start
        self.next_id = end

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "_MemoryCursor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
