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
from typing import Callable

from ..record import MAX_HEADER, RecordError, parse
from .index import SparseIndex

__all__ = ["Partition", "partition_name", "parse_name", "ScanResult", "scan", "id_at"]

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
    head = os.pread(fd, MAX_HEADER, offset)
    nl = head.find(b"\r\n")
    if not head.startswith(b"+") or nl < 0:
        return None
    field0 = head[1:nl].split(b" ", 1)[0]
    return int(field0) if field0.isdigit() else None


@dataclass(slots=True)
class ScanResult:
    end: int  # offset after the last good record
    last_id: int  # id of the last good record (start_id - 1 if none)
    error: RecordError | None  # what stopped the scan before ``size``, if anything
    bad_id: bool = False  # the stop was a record with an unexpected id


def scan(
    fd: int,
    start: int,
    size: int,
    next_id: int,
    on_record: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Verify records from ``start`` to ``size``, expecting ids from ``next_id``.

    Calls ``on_record(id, offset)`` for each good record. Never raises for
    bad data: the result says where the good part ends and why.
    """
    pos = start
    while pos < size:
        block = os.pread(fd, min(BLOCK, size - pos), pos)
        if not block:
            return ScanResult(pos, next_id - 1, RecordError("file shorter than expected", pos, True))
        view = memoryview(block)
        local = 0
        progressed = False
        while local < len(block):
            try:
                got = parse(view, local)
            except RecordError as exc:
                return ScanResult(pos + local, next_id - 1, RecordError(exc.reason, pos + local))
            if got is None:
                break
            rec, nxt = got
            if rec.id != next_id:
                err = RecordError(f"expected id {next_id}, found {rec.id}", pos + local)
                return ScanResult(pos + local, next_id - 1, err, bad_id=True)
            if on_record is not None:
                on_record(rec.id, pos + local)
            next_id += 1
            local = nxt
            progressed = True
        if not progressed:
            if pos + len(block) >= size:
                return ScanResult(pos, next_id - 1, RecordError("incomplete record", pos, True))
            # A record larger than the block: read again from its start, bigger.
            need = _record_size(block)
            if need is None or pos + need > size:
                return ScanResult(pos, next_id - 1, RecordError("incomplete record", pos, True))
            block = os.pread(fd, need, pos)
            got = parse(block, 0)
            if got is None:
                return ScanResult(pos, next_id - 1, RecordError("incomplete record", pos, True))
            local = got[1]
            if got[0].id != next_id:
                err = RecordError(f"expected id {next_id}, found {got[0].id}", pos)
                return ScanResult(pos, next_id - 1, err, bad_id=True)
            if on_record is not None:
                on_record(got[0].id, pos)
            next_id += 1
        pos += local
    return ScanResult(pos, next_id - 1, None)


def _record_size(block: bytes) -> int | None:
    nl = block.find(b"\r\n", 0, MAX_HEADER)
    if nl < 0:
        return None
    fields = block[1:nl].split(b" ")
    if len(fields) != 3 or not fields[1].isdigit():
        return None
    return nl + 2 + int(fields[1]) + 2
