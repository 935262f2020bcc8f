"""The sparse index of one partition: id -> byte offset, every ~``interval`` bytes.

In memory it is two parallel ``array('Q')``: ids and offsets, both strictly
increasing, the first entry always the partition's first record at offset 0.
Finding any id costs a binary search here plus a scan of at most
``interval`` bytes and one record in the partition file.

On disk (``<partition>.idx``) it is the same entries, 16 bytes each::

    <u64 little-endian id><u64 little-endian offset>

The partition file is the truth and this is a cache (Kafka's OffsetIndex has
no checksum either): ``sane()`` checks it against the partition on open, and
the caller rebuilds it by scanning when it fails.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right
from typing import Callable, Sequence

from ..fsutil import atomic_write

__all__ = ["SparseIndex", "ENTRY"]

ENTRY = struct.Struct("<QQ")
assert ENTRY.size == 16


class SparseIndex:
    def __init__(self, interval: int = 4096) -> None:
        self.interval = interval
        self.ids = array("Q")
        self.offsets = array("Q")
        self._saved = 0  # entries already in the .idx file

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, id: int, offset: int) -> None:
        """Record the position of ``id`` if it is ``interval`` past the last entry."""
        offsets = self.offsets
        if not offsets or offset - offsets[-1] >= self.interval:
            self.ids.append(id)
            offsets.append(offset)

    def put(self, id: int, offset: int) -> None:
        """Add an entry whatever the interval: ``id`` starts a run that can be
        reached only from here (the first good record after a corrupt one)."""
        if self.ids and (id <= self.ids[-1] or offset <= self.offsets[-1]):
            raise ValueError(f"index entry ({id}, {offset}) is not after the last one")
        self.ids.append(id)
        self.offsets.append(offset)

    def add_run(self, first_id: int, starts: Sequence[int], count: int) -> None:
        """``add`` for ``count`` consecutive records from ``first_id`` starting
        at ``starts[0..count-1]`` (increasing): one bisect per entry made, not
        a Python step per record (the append path)."""
        interval = self.interval
        offsets = self.offsets
        due = (offsets[-1] + interval) if offsets else starts[0]
        k = bisect_left(starts, due, 0, count)
        while k < count:
            self.ids.append(first_id + k)
            offsets.append(starts[k])
            k = bisect_left(starts, starts[k] + interval, k + 1, count)

    def due(self, size: int) -> int:
        """Where ``add`` makes the next entry: ``interval`` past the last, or at
        ``size`` (the partition's end: its next record) when empty."""
        return self.offsets[-1] + self.interval if self.offsets else size

    def add_points(self, points: Sequence[int]) -> None:
        """Append entries chosen by ``add``'s rule elsewhere (``record.scan_records``
        with ``points``): flat ``id, offset, id, offset, ...``, increasing, each
        at least ``interval`` past the one before."""
        if not points:
            return
        ids, offsets = points[0::2], points[1::2]
        if self.offsets and offsets[0] < self.offsets[-1] + self.interval:
            raise ValueError(f"index entry ({ids[0]}, {offsets[0]}) is not due yet")
        self.ids.extend(ids)
        self.offsets.extend(offsets)

    @property
    def last(self) -> tuple[int, int]:
        """The last entry: ``(id, offset)``."""
        if not self.ids:
            raise KeyError("empty index")
        return self.ids[-1], self.offsets[-1]

    def floor(self, id: int) -> tuple[int, int]:
        """The last entry at or before ``id``: ``(entry_id, offset)``."""
        i = bisect_right(self.ids, id) - 1
        if i < 0:
            raise KeyError(id)
        return self.ids[i], self.offsets[i]

    def truncate(self, offset: int) -> None:
        """Forget entries at or past ``offset`` (the file was cut there)."""
        i = bisect_right(self.offsets, offset - 1) if offset else 0
        del self.ids[i:]
        del self.offsets[i:]
        self._saved = -1  # the file holds entries we dropped: rewrite it whole

    def sane(self, first_id: int, size: int, id_at: Callable[[int], int | None]) -> str | None:
        """Check the entries against the partition; return what is wrong, or None.

        ``id_at(offset)`` reads the id of the record at ``offset`` in the file.
        """
        ids, offsets = self.ids, self.offsets
        if not ids:
            return "empty" if size else None
        if ids[0] != first_id or offsets[0] != 0:
            return "first entry is not the first record"
        for i in range(1, len(ids)):
            if ids[i] <= ids[i - 1] or offsets[i] <= offsets[i - 1]:
                return f"entries out of order at {i}"
        if offsets[-1] >= size:
            return "entry past the end of the partition"
        for i in range(len(ids) - 1, -1, -1):  # one pread each: cheap next to a scan
            if id_at(offsets[i]) != ids[i]:
                return f"entry for id {ids[i]} does not point at its record"
        return None

    # -- persistence ------------------------------------------------------------

    @classmethod
    def load(cls, path: str, interval: int) -> "SparseIndex | None":
        """Read an .idx file; None when missing or not a whole number of entries."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if len(data) % ENTRY.size:
            return None
        index = cls(interval)
        flat = array("Q")
        flat.frombytes(data)
        if struct.pack("=H", 1) != struct.pack("<H", 1):  # pragma: no cover (big-endian)
            flat.byteswap()
        index.ids = flat[0::2]
        index.offsets = flat[1::2]
        index._saved = len(index.ids)
        return index

    def _entries(self, start: int) -> bytes:
        return b"".join(
            ENTRY.pack(self.ids[i], self.offsets[i]) for i in range(start, len(self.ids))
        )

    def save(self, path: str) -> None:
        """Write the whole index atomically (tmp + rename); no fsync: it is a cache."""
        atomic_write(path, self._entries(0), durable=False)
        self._saved = len(self.ids)

    def save_new(self, path: str) -> None:
        """Append the entries added since the last save."""
        if self._saved < 0:
            self.save(path)
            return
        if self._saved == len(self.ids):
            return
        with open(path, "ab") as f:
            f.write(self._entries(self._saved))
        self._saved = len(self.ids)
