"""Storage behind one interface: ``Log``.

Two implementations share one contract (tests/unit/test_log_contract.py):
``MemoryLog`` for unit tests and ``FileLog``, partitioned files on disk,
the one writer on top of ``LogReader`` (``reader.py``), which alone opens a
directory read-only: every write then raises ``Refused``.

The contract, in short:

- ``append(bodies)`` gives the bodies ids ``head()+1 ..``, all or none,
  and returns the last id. Appended bytes are written but not yet durable.
- Durability is two steps so the caller can run the slow part in a thread:
  ``point = begin_sync()``; ``point.run()`` (blocking, fsync);
  ``end_sync(point)``. ``synced_head()`` is the last id known durable.
- ``cursor(start)`` gives a ``Cursor`` before record ``start``: its
  ``ranges(end)`` yields the stored bytes of ids ``[next_id, end)`` as
  ``(fd, offset, count)`` for ``sendfile``, the records exactly as READ sends
  them (``cursor.py`` says how it follows retention and corruption).
- ``position(id)`` is the ``(partition, offset)`` where record ``id``
  starts (``id`` may be head+1), the coordinates a cursor can also seek to.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

from ..errors import StorageError
from ..record import Record

__all__ = ["Cursor", "Log", "Range", "SyncPoint"]

Range = tuple[int, int, int]  # (fd, offset, count): send with os.sendfile


class SyncPoint(Protocol):
    head: int

    def run(self) -> None: ...


class Cursor(Protocol):
    next_id: int

    @property
    def position(self) -> tuple[int, int]: ...
    def seek(self, id: int) -> None: ...
    def seek_position(self, partition: int, offset: int) -> None: ...
    def ranges(self, end: int) -> Iterator[Range]: ...
    def close(self) -> None: ...


class Log(Protocol):
    def head(self) -> int: ...
    def first_id(self) -> int: ...
    def synced_head(self) -> int: ...
    def append(self, bodies: Sequence[bytes]) -> int: ...
    def begin_sync(self) -> SyncPoint: ...
    def end_sync(self, point: Any) -> None: ...  # takes what its begin_sync gave
    def cursor(self, start: int) -> Cursor: ...
    def position(self, id: int) -> tuple[int, int]: ...
    def read(self, start: int, end: int) -> list[Record]: ...
    def stats(self) -> dict[str, object]: ...
    def close(self) -> None: ...
    def fail_sync(self, exc: BaseException) -> StorageError: ...
