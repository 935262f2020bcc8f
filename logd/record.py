"""The record format: the same bytes on disk and on the wire.

One record, field by field::

    +<id> <len> <crc>\\r\\n<body>\\r\\n

``+``     one byte, so a record never looks like ``+EOF\\r\\n`` or a reply line
``id``    decimal, no leading zeros, >= 1
``len``   decimal byte length of ``body``
``crc``   8 lowercase hex digits: CRC-32 (``zlib.crc32``) of the decimal id's
          ASCII bytes followed by the body, so a record copied under the
          wrong id fails its check too
``body``  exactly ``len`` arbitrary bytes (``\\r\\n`` inside is fine)

Example: ``+1 5 8ed62430\\r\\nhello\\r\\n``.

Because storage and wire share the format, READ sends byte ranges straight
from partition files with ``sendfile``. This module is pure: bytes in,
records out; it never does I/O and never logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator
from zlib import crc32

__all__ = [
    "Record",
    "RecordError",
    "MAX_HEADER",
    "encode",
    "encode_batch",
    "checksum",
    "parse",
    "iter_records",
]

CRLF = b"\r\n"
# '+' + 20-digit id + ' ' + 20-digit len + ' ' + 8 hex + CRLF, with room to spare.
MAX_HEADER = 64


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    body: bytes


class RecordError(ValueError):
    """Bytes that are not a valid record.

    ``torn`` is True when the bytes end before the record does (a torn
    write, or simply more data due), False when what is there is wrong.
    """

    def __init__(self, reason: str, offset: int, torn: bool = False) -> None:
        super().__init__(f"{reason} at offset {offset}")
        self.reason = reason
        self.offset = offset
        self.torn = torn


def checksum(id: int, body: bytes) -> int:
    return crc32(body, crc32(b"%d" % id))


def encode(id: int, body: bytes) -> bytes:
    idb = b"%d" % id
    return b"+%s %d %08x\r\n%s\r\n" % (idb, len(body), crc32(body, crc32(idb)), body)


def encode_batch(first_id: int, bodies: Iterable[bytes]) -> tuple[bytes, list[int]]:
    """Encode consecutive records; return the bytes and each record's size."""
    parts = []
    sizes = []
    i = first_id
    for body in bodies:
        idb = b"%d" % i
        rec = b"+%s %d %08x\r\n%s\r\n" % (idb, len(body), crc32(body, crc32(idb)), body)
        parts.append(rec)
        sizes.append(len(rec))
        i += 1
    return b"".join(parts), sizes


def parse(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Record, int] | None:
    """Parse one record at ``pos``; return it and the offset after it.

    Returns None when ``buf`` ends inside the record (need more bytes).

    Raises:
        RecordError: the bytes at ``pos`` are not a valid record.
    """
    end = len(buf)
    if pos >= end:
        return None
    if buf[pos] != 0x2B:  # '+'
        raise RecordError("record does not start with '+'", pos)
    nl = bytes(buf[pos : pos + MAX_HEADER]).find(CRLF)
    if nl < 0:
        if end - pos >= MAX_HEADER:
            raise RecordError("record header too long", pos)
        return None
    header = bytes(buf[pos + 1 : pos + nl])
    fields = header.split(b" ")
    if len(fields) != 3 or len(fields[2]) != 8:
        raise RecordError("malformed record header", pos)
    try:
        id = int(fields[0])
        size = int(fields[1])
        crc = int(fields[2], 16)
    except ValueError:
        raise RecordError("malformed record header", pos) from None
    if id < 1 or size < 0 or not fields[0].isdigit() or not fields[1].isdigit():
        raise RecordError("malformed record header", pos)
    start = pos + nl + 2
    stop = start + size
    if stop + 2 > end:
        return None
    if buf[stop : stop + 2] != CRLF:
        raise RecordError("record body not followed by CRLF", pos)
    body = bytes(buf[start:stop])
    if crc32(body, crc32(fields[0])) != crc:
        raise RecordError(f"checksum mismatch for id {id}", pos)
    return Record(id, body), stop + 2


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
