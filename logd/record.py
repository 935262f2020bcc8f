"""The record format: the same bytes on disk and on the wire.

One record, field by field::

    +<id> <len> <more> <crc>\r\n<body>\r\n

``+``     one byte, so a record never looks like ``+EOF\r\n`` or a reply line
``id``    decimal, >= 1
``len``   decimal byte length of ``body``
``more``  decimal: how many records of the same MSG follow this one (0 on
          the last). Recovery uses it to keep a MSG all or nothing: a batch
          whose last record is missing after a crash is cut off whole.
``crc``   8 lowercase hex digits: CRC-32 (``zlib.crc32``) of the header text
          ``<id> <len> <more>`` followed by the body, so a record copied under
          another id, or with a damaged length or count, fails its check
``body``  exactly ``len`` arbitrary bytes (``\r\n`` inside is fine)

Example: ``+1 5 0 10923160\r\nhello\r\n``.

Because storage and wire share the format, READ sends byte ranges straight
from partition files with ``sendfile``. This module is pure: bytes in,
records out; it never does I/O and never logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence
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
# '+', 19-digit id, 19-digit len, 5-digit more, 8 hex, spaces and CRLF, with room to spare.
MAX_HEADER = 64


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    body: bytes
    more: int = 0  # records of the same MSG after this one


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


def checksum(id: int, body: bytes, more: int = 0) -> int:
    return crc32(body, crc32(b"%d %d %d" % (id, len(body), more)))


def encode(id: int, body: bytes, more: int = 0) -> bytes:
    head = b"%d %d %d" % (id, len(body), more)
    return b"+%s %08x\r\n%s\r\n" % (head, crc32(body, crc32(head)), body)


def encode_batch(first_id: int, bodies: Sequence[bytes]) -> tuple[bytes, list[int]]:
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
    if len(fields) != 4 or len(fields[3]) != 8 or not all(f.isdigit() for f in fields[:3]):
        raise RecordError("malformed record header", pos)
    try:
        crc = int(fields[3], 16)
    except ValueError:
        raise RecordError("malformed record header", pos) from None
    id, size, more = int(fields[0]), int(fields[1]), int(fields[2])
    if id < 1:
        raise RecordError("malformed record header", pos)
    start = pos + nl + 2
    stop = start + size
    if stop + 2 > end:
        return None
    if buf[stop : stop + 2] != CRLF:
        raise RecordError("record body not followed by CRLF", pos)
    body = bytes(buf[start:stop])
    if crc32(body, crc32(header[: header.rindex(b" ")])) != crc:
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
