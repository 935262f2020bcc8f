"""One partition file: naming, reading record headers, and scanning.

A partition is a file of records (``logd/record.py``) with consecutive ids,
named ``<number:010d>-<first id:020d>.log`` so that ``ls`` sorts them and the
name alone says which ids it starts with (as Kafka names segments by base
offset). Its sparse index sits beside it as ``.idx``.

Scanning reads large blocks with ``pread`` and verifies every record; it
stops at the first record that is incomplete or wrong and says where.
No gevent, no sockets: callers decide where blocking I/O may run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Callable, Sequence

from ..record import RecordError, parse, pread_header, read_header, scan_records
from .index import SparseIndex

__all__ = [
    "Partition", "partition_name", "parse_name", "ScanResult", "scan", "resync", "id_at", "walk",
]

_NAME = re.compile(r"^(\d{10})-(\d{20})\.log$")
BLOCK = 1 << 20


def partition_name(number: int, first_id: int) -> str:
    return f"{number:010d}-{first_id:020d}.log"


def parse_name(name: str) -> tuple[int, int] | None:
    m = _NAME.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(slots=True)
class Partition:
    number: int
    first_id: int
    path: str
    size: int = 0
    last_id: int = 0  # first_id - 1 while empty
    index: SparseIndex = field(default_factory=SparseIndex)

    @property
    def idx_path(self) -> str:
        return self.path[:-4] + ".idx"

    @property
    def count(self) -> int:
        return self.last_id - self.first_id + 1


def id_at(fd: int, offset: int) -> int | None:
    """The id in the record header at ``offset``, or None if there is none."""
    try:
        h = pread_header(fd, offset)
    except RecordError:
        return None
    return h.id if h is not None else None


def walk(fd: int, offset: int, id: int, target: int, end: int) -> tuple[int, int]:
    """Step over record headers from ``offset`` (where record ``id`` starts)
    until record ``target`` or ``end``; return the (offset, id) reached.

    Reads 64 KiB blocks, so a seek within an index interval is one pread.
    Headers are read, not bodies: the CRC is for whoever sends or scans them.

    Raises:
        RecordError: no valid header where one is due, or one with another id
            (``offset`` in the file).
    """
    block = b""
    base = offset
    while id < target and offset < end:
        rel = offset - base
        h = read_header(block, rel) if rel < len(block) else None
        if h is None:
            base, rel = offset, 0
            block = os.pread(fd, 65536, offset)
            h = read_header(block)
            if h is None:
                raise RecordError(f"record {id} is cut short", offset, torn=True)
        if h.id != id:
            raise RecordError(f"expected id {id}, found {h.id}", offset)
        offset += h.record_size
        id += 1
    return offset, id


@dataclass(slots=True)
class ScanResult:
    end: int  # offset after the last good record
    last_id: int  # id of the last good record (start_id - 1 if none)
    error: RecordError | None  # what stopped the scan before ``size``, if anything
    batch_end: int = 0  # offset after the last record that ends a MSG (more == 0)
    batch_last_id: int = 0  # its id

    @property
    def torn_batch(self) -> bool:
        """The last good record promises more records of its MSG that are not there."""
        return self.end != self.batch_end


def scan(
    fd: int,
    start: int,
    size: int,
    next_id: int,
    on_run: Callable[[int, Sequence[int], int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Verify records from ``start`` to ``size``, expecting ids from ``next_id``.

    ``start`` must be the first record of a MSG. Calls ``on_run(first_id,
    starts, count)`` (``SparseIndex.add_run``) for each block's good
    records. Never raises for bad data: the result says where the good part
    ends and why. ``progress(nbytes)`` is called after each block verified.
    The records are checked by ``record.scan_records`` (native when built).
    """
    result = ScanResult(start, next_id - 1, None, start, next_id - 1)
    more = 0  # records still due in the current MSG
    pos = start
    while pos < size:
        block = os.pread(fd, min(BLOCK, size - pos), pos)
        if not block:
            result.error = RecordError("file shorter than expected", pos, True)
            return result
        sizes: list[int] | None = [] if on_run is not None else None
        got = scan_records(block, 0, next_id, more, 0, sizes)
        if got.end == 0 and got.error is None:  # one record larger than the block: read it whole
            h = read_header(block)  # scan_records read it: no error here
            if h is None or pos + h.record_size > size:
                result.error = RecordError("incomplete record", pos, True)
                return result
            got = scan_records(os.pread(fd, h.record_size, pos), 0, next_id, more, 0, sizes)
        if on_run is not None and sizes:
            on_run(next_id, list(accumulate(sizes, initial=pos)), len(sizes))
        if got.end:
            result.end = pos + got.end
            result.last_id = got.next_id - 1
        if got.batch_id != next_id - 1:
            result.batch_end, result.batch_last_id = pos + got.batch_end, got.batch_id
        next_id, more = got.next_id, got.more
        if got.error is not None:
            result.error = RecordError(got.error, pos + got.end)
            return result
        if got.end == 0:  # the whole record was read and is still short: the file changed
            result.error = RecordError("incomplete record", pos, True)
            return result
        pos += got.end
        if progress is not None:
            progress(got.end)
    return result


def resync(fd: int, start: int, size: int, want_id: int) -> int | None:
    """Offset of a valid record ``want_id`` after ``start``, or None.

    Tells corruption in the middle of a partition (good records follow the
    bad one) from a torn tail (nothing valid follows).
    """
    pattern = b"\n+%d " % want_id
    pos = start
    while pos < size:
        block = os.pread(fd, min(BLOCK + 64, size - pos), pos)
        i = block.find(pattern)
        while i >= 0:
            at = pos + i + 1
            try:
                got = parse(os.pread(fd, min(size - at, BLOCK), at))
            except RecordError:
                got = None
            if got is None:
                try:
                    h = pread_header(fd, at)
                    if h is not None and at + h.record_size <= size:
                        got = parse(os.pread(fd, h.record_size, at))
                except RecordError:
                    got = None
            if got is not None and got[0].id == want_id:
                return at
            i = block.find(pattern, i + 1)
        pos += BLOCK
    return None
