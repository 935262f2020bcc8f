"""The record format: the same bytes on disk and on the wire.

One record, field by field::

    +<id> <len> <more> <crc>\r\n<body>\r\n

``+``     one byte, so a record never looks like ``+EOF\r\n`` or a reply line
``id``    decimal, >= 1
``len``   decimal byte length of ``body``
``more``  decimal, >= 0: how many records of the same MSG follow this one (0 on
          the last). Recovery uses it to keep a MSG all or nothing: a batch
          whose last record is missing after a crash is cut off whole.
``crc``   8 lowercase hex digits: CRC-32 (``zlib.crc32``) of the header text
          ``<id> <len> <more>`` followed by the body, so a record copied under
          another id, or with a damaged length or count, fails its check
``body``  exactly ``len`` arbitrary bytes (``\r\n`` inside is fine)

Example: ``+1 5 0 10923160\r\nhello\r\n``.

Numbers are written as ``%d`` writes them: at most 19 digits, no sign, no
leading zero (so the checked header text is the one ``checksum`` builds),
and the header with its CRLF is at most ``MAX_HEADER`` bytes. ``read_header``
(from a buffer) and ``pread_header`` (from a file) are the one reader of
that line, for every path: the client's ReplyParser, scans and recovery,
index checks and seeks. Bytes that break it raise ``RecordError``, never a
``ValueError`` or ``IndexError``.

``scan_records`` verifies a run of records in a buffer (header, CRC, id
sequence, MSG chain) and says how far it got and why it stopped: the one
verifier behind recovery's scan and the follower. It and ``encode_batch``
run in C when ``logd._speedups`` is built (``logd/speedups.py``); the
``*_pure`` functions here are the reference and the fallback.

Because storage and wire share the format, READ sends byte ranges straight
from partition files with ``sendfile``. This module is pure: bytes in,
records out; it never does I/O and never logs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence
from zlib import crc32

from .speedups import native as _native

__all__ = [
    "Record",
    "Header",
    "RecordError",
    "read_header",
    "pread_header",
    "MAX_HEADER",
    "encode",
    "encode_batch",
    "encode_batch_pure",
    "Scan",
    "scan_records",
    "scan_records_pure",
    "checksum",
    "parse",
    "iter_records",
]

CRLF = b"\r\n"
# '+', 19-digit id and len, 5-digit more, 8 hex, spaces and CRLF fit with room to
# spare; the whole line, CRLF included, is bounded by it whatever its fields.
MAX_HEADER = 64


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    body: bytes
    more: int = 0  # records of the same MSG after this one


class RecordError(Exception):
    """Bytes that are not a valid record (or record header).

    Raised by this pure module, which knows offsets but not partitions or
    connections: storage paths turn it into ``errors.CorruptLogError`` (with
    the partition), the client's ReplyParser into ``errors.ProtocolError``.

    ``torn`` is True when the bytes end before the record does (a torn
    write, or simply more data due), False when what is there is wrong.
    """

    def __init__(self, reason: str, offset: int, torn: bool = False) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset
        self.torn = torn


class Header(NamedTuple):
    """A parsed record header. ``length`` counts its bytes, '+' to CRLF."""

    id: int
    size: int  # body length
    more: int
    crc: int
    length: int

    @property
    def record_size(self) -> int:
        """Bytes of the whole record: header, body, CRLF."""
        return self.length + self.size + 2

    def matches(self, body: bytes) -> bool:
        """True when ``body`` has this header's length and checksum."""
        return len(body) == self.size and checksum(self.id, body, self.more) == self.crc


# A NUMBER: 1-19 digits, no leading zero. One match does the whole check; a
# failed match falls back to _why() to say what is wrong.
_HEADER = re.compile(
    rb"\+([1-9][0-9]{0,18}) (0|[1-9][0-9]{0,18}) (0|[1-9][0-9]{0,18}) ([0-9a-f]{8})\r\n"
)
_match = _HEADER.match
_new = tuple.__new__


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> Header | None:
    """The record header at ``pos`` of ``buf``; None when ``buf`` ends inside it.

    Raises:
        RecordError: the bytes at ``pos`` are not a record header.
    """
    m = _match(buf, pos, pos + MAX_HEADER)
    if m is not None:
        id, size, more, crc = m.groups()
        # tuple.__new__: a third of Header()'s cost, once per record on every path
        return _new(Header, (int(id), int(size), int(more), int(crc, 16), m.end() - pos))
    _why(buf, pos)  # raises unless more bytes are due
    return None


def _why(buf: bytes | bytearray | memoryview, pos: int) -> None:
    if pos >= len(buf):
        return None
    if buf[pos] != 0x2B:  # '+'
        raise RecordError("record does not start with '+'", pos)
    if bytes(buf[pos : pos + MAX_HEADER]).find(CRLF) < 0:
        if len(buf) - pos >= MAX_HEADER:
            raise RecordError("record header too long", pos)
        return None  # more bytes due (judged whole when its CRLF arrives)
    raise RecordError("malformed record header", pos)


def pread_header(fd: int, offset: int) -> Header | None:
    """The record header at ``offset`` of file ``fd``; None when the file ends
    inside it (or at ``offset``).

    Raises:
        RecordError: the bytes at ``offset`` are not a record header (its
            ``offset`` is the file offset).
    """
    head = os.pread(fd, MAX_HEADER, offset)
    try:
        return read_header(head)
    except RecordError as exc:
        raise RecordError(exc.reason, offset) from None


def checksum(id: int, body: bytes, more: int = 0) -> int:
    return crc32(body, crc32(b"%d %d %d" % (id, len(body), more)))


def encode(id: int, body: bytes, more: int = 0) -> bytes:
    head = b"%d %d %d" % (id, len(body), more)
    return b"+%s %08x\r\n%s\r\n" % (head, crc32(body, crc32(head)), body)


def encode_batch_pure(first_id: int, bodies: Sequence[bytes]) -> tuple[bytes, list[int]]:
    """Encode one MSG's records; return the bytes and each record's size."""
    parts = []
    sizes = []
    more = len(bodies)
    for i, body in enumerate(bodies, first_id):
        more -= 1
        head = b"%d %d %d" % (i, len(body), more)
        rec = b"+%s %08x\r\n%s\r\n" % (head, crc32(body, crc32(head)), body)
        parts.append(rec)
        sizes.append(len(rec))
    return b"".join(parts), sizes


encode_batch = encode_batch_pure if _native is None else _native.encode_batch


class Scan(NamedTuple):
    """How far ``scan_records`` got, and why it stopped."""

    end: int  # offset after the last good record (``pos`` if none)
    next_id: int  # the id due next
    more: int  # the last good record's ``more`` (the given one if none): records still due
    batch_end: int  # offset after the last good record ending a MSG (``pos`` if none)
    batch_id: int  # its id (``next_id - 1`` as given if none)
    batch_crc: int  # its CRC (the given ``crc`` if none)
    error: str | None  # why the record at ``end`` is bad; None: the buffer ends at or inside it
    due: int = 0  # with ``points``: where the next index entry is due (as ``base + offset``)


def scan_records_pure(
    buf: bytes | bytearray | memoryview, pos: int, next_id: int, more: int = 0, crc: int = 0,
    sizes: list[int] | None = None, points: list[int] | None = None, base: int = 0, due: int = 0,
    interval: int = 0,
) -> Scan:
    """Verify the records from ``pos`` of ``buf``: each header and CRC (as
    ``parse``), ids from ``next_id``, and MSG chains (``more`` counts down to
    0; ``more`` given > 0 means ``pos`` is inside a MSG with that many
    records due). Appends each good record's size to ``sizes``. To
    ``points``, appends only what the sparse index keeps, as
    ``SparseIndex.add`` decides: ``id, base + offset`` of each good record
    starting at or past ``due`` (then due moves ``interval`` past it); the
    result's ``due`` says where the next one is due. Stops at the end of
    ``buf``, at a record still arriving, or at a bad one (``error``). Never
    raises for bad data.
    """
    end = len(buf)
    batch_end, batch_id, batch_crc = pos, next_id - 1, crc
    error = None
    while pos < end:
        try:
            h = read_header(buf, pos)
        except RecordError as exc:
            error = exc.reason
            break
        if h is None:
            break
        id, size, rmore, rcrc, length = h
        start = pos + length
        stop = start + size
        if stop + 2 > end:
            break
        if buf[stop : stop + 2] != CRLF:
            error = "record body not followed by CRLF"
            break
        if crc32(buf[start:stop], crc32(buf[pos + 1 : start - 11])) != rcrc:  # see parse()
            error = f"checksum mismatch for id {id}"
            break
        if id != next_id:
            error = f"expected id {next_id}, found {id}"
            break
        if more and rmore != more - 1:
            error = f"record {id} breaks its MSG (more={rmore}, expected {more - 1})"
            break
        if sizes is not None:
            sizes.append(stop + 2 - pos)
        if points is not None and base + pos >= due:
            points += (id, base + pos)
            due = base + pos + interval
        pos = stop + 2
        next_id += 1
        more = rmore
        if not rmore:
            batch_end, batch_id, batch_crc = pos, id, rcrc
    return _new(Scan, (pos, next_id, more, batch_end, batch_id, batch_crc, error, due))


def _scan_records_native(
    buf: bytes | bytearray | memoryview, pos: int, next_id: int, more: int = 0, crc: int = 0,
    sizes: list[int] | None = None, points: list[int] | None = None, base: int = 0, due: int = 0,
    interval: int = 0,
) -> Scan:
    assert _native is not None
    return _new(Scan, _native.scan(buf, pos, next_id, more, crc, sizes, points, base, due, interval))


scan_records = scan_records_pure if _native is None else _scan_records_native


def parse(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Record, int] | None:
    """Parse one record at ``pos``; return it and the offset after it.

    Returns None when ``buf`` ends inside the record (need more bytes).

    Raises:
        RecordError: the bytes at ``pos`` are not a valid record.
    """
    h = read_header(buf, pos)
    if h is None:
        return None
    id, size, more, crc, length = h
    start = pos + length
    stop = start + size
    if stop + 2 > len(buf):
        return None
    if buf[stop : stop + 2] != CRLF:
        raise RecordError("record body not followed by CRLF", pos)
    body = bytes(buf[start:stop])
    # The header text the CRC covers, '<id> <len> <more>', sliced rather than
    # formatted again: the reader admits only the form checksum() writes.
    if crc32(body, crc32(buf[pos + 1 : start - 11])) != crc:
        raise RecordError(f"checksum mismatch for id {id}", pos)
    return Record(id, body, more), stop + 2


def iter_records(buf: bytes | bytearray | memoryview, pos: int = 0) -> Iterator[tuple[int, Record]]:
    """Yield ``(offset, record)`` for each record in ``buf``.

    Raises:
        RecordError: a bad record, or (``torn=True``) an incomplete last one.
    """
    end = len(buf)
    while pos < end:
        got = parse(buf, pos)
        if got is None:
            raise RecordError("incomplete record", pos, torn=True)
        rec, nxt = got
        yield pos, rec
        pos = nxt
