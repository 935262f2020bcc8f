"""MemoryLog: the reference ``Log``, records held in a list. For tests."""

from __future__ import annotations

from typing import Iterator, Sequence

from ..errors import FsyncFailed
from ..record import Record, encode, parse
from . import Span

__all__ = ["MemoryLog"]


class _Point:
    def __init__(self, head: int) -> None:
        self.head = head

    def run(self) -> None:
        pass


class MemoryLog:
    def __init__(self) -> None:
        self._records: list[bytes] = []
        self._synced = 0
        self._first = 1

    def head(self) -> int:
        return self._first + len(self._records) - 1

    def first_id(self) -> int:
        return self._first

    def synced_head(self) -> int:
        return self._synced

    def append(self, bodies: Sequence[bytes]) -> int:
        first = self.head() + 1
        last = len(bodies) - 1
        encoded = [encode(first + i, b, last - i) for i, b in enumerate(bodies)]
        self._records.extend(encoded)  # only once every body encoded: all or nothing
        return self.head()

    def begin_sync(self) -> _Point:
        return _Point(self.head())

    def end_sync(self, point: _Point) -> None:
        self._synced = max(self._synced, point.head)

    def position(self, id: int) -> tuple[int, int]:
        return 1, sum(map(len, self._records[: id - self._first]))

    def spans(self, start: int, end: int) -> Iterator[Span]:
        data = b"".join(self._records[start - self._first : end - self._first])
        if data:
            yield data, 0, len(data)

    def read(self, start: int, end: int) -> list[Record]:
        out = []
        for raw in self._records[start - self._first : end - self._first]:
            got = parse(raw)
            assert got is not None
            out.append(got[0])
        return out

    def stats(self) -> dict[str, object]:
        return {"partitions": 1, "bytes": sum(map(len, self._records))}

    def close(self) -> None:
        pass

    def fail_sync(self, exc: BaseException) -> FsyncFailed:
        return FsyncFailed(str(exc))

    def corrupt_between(self, start: int, end: int) -> None:
        return None  # memory does not rot

    def first_id_of(self, number: int) -> int | None:
        return self._first if number == 1 else None
