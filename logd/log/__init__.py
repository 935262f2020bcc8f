"""Storage behind one interface: ``Log``.

Two implementations share one contract (tests/unit/test_log_contract.py):
``MemoryLog`` for unit tests and ``FileLog``, partitioned files on disk.

The contract, in short:

- ``append(bodies)`` gives the bodies ids ``head()+1 ..``, all or none,
  and returns the last id. Appended bytes are written but not yet durable.
- Durability is two steps so the caller can run the slow part in a thread:
  ``point = begin_sync()``; ``point.run()`` (blocking, fsync);
  ``end_sync(point)``. ``synced_head()`` is the last id known durable.
- ``spans(start, end)`` gives the stored bytes of ids ``[start, end)`` as
  ``(source, offset, length)``, where ``source`` is a file path (send it with
  sendfile) or ``bytes``. Those bytes are the records exactly as READ sends
  them.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence, Union

from ..errors import StorageError
from ..record import Record

__all__ = ["Log", "Span", "SyncPoint"]

Span = tuple[Union[str, bytes], int, int]


class SyncPoint(Protocol):
    head: int

    def run(self) -> None: ...


class Log(Protocol):
    def head(self) -> int: ...
    def first_id(self) -> int: ...
    def synced_head(self) -> int: ...
    def append(self, bodies: Sequence[bytes]) -> int: ...
    def begin_sync(self) -> SyncPoint: ...
    def end_sync(self, point: Any) -> None: ...  # takes what its begin_sync gave
    def position(self, id: int) -> tuple[int, int]: ...
    def spans(self, start: int, end: int) -> Iterator[Span]: ...
    def read(self, start: int, end: int) -> list[Record]: ...
    def stats(self) -> dict[str, object]: ...
    def close(self) -> None: ...
    def fail_sync(self, exc: BaseException) -> StorageError: ...
    def corrupt_between(self, start: int, end: int) -> Any: ...
    def first_id_of(self, number: int) -> int | None: ...
