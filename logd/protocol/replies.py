"""The logd wire protocol's replies, with no sockets: the server's reply
encoders, and ``ReplyParser``, the client's side: reply lines, bodies, and the
record stream of READ (whose headers ``logd.record`` reads).

A READ stream is read a run of records at a time (``next_records``): one
call decodes up to ``MAX_RUN`` whole, valid records buffered, so a 256 KiB
receive costs a few calls, not one per record. ``read_records_pure`` is that run's reference
code; it runs in C when ``logd._speedups`` is built (``logd/speedups.py``).
Whatever ends a run (more bytes due, +EOF, an error line, a bad record) is
judged by ``next_record``'s Python code, in both implementations.
"""

from __future__ import annotations

from dataclasses import dataclass
from zlib import crc32

from .. import errors
from ..errors import LogdError, ProtocolError
from ..record import MAX_HEADER, Record, RecordError, read_header
from ..speedups import native as _native
from .commands import CRLF, MAX_INT_DIGITS, NEED_DATA, NeedData

__all__ = [
    "OK",
    "PONG",
    "EOF",
    "encode_ok_id",
    "encode_body",
    "encode_error",
    "ReplyParser",
    "Ok",
    "OkId",
    "Pong",
    "Body",
    "Eof",
    "MAX_REPLY_LINE",
    "MAX_RECORD_HEADER",
    "MAX_RUN",
    "read_records_pure",
]

OK = b"OK\r\n"
PONG = b"PONG\r\n"
EOF = b"+EOF\r\n"


def encode_ok_id(id: int) -> bytes:
    return b"OK %d\r\n" % id


def encode_body(body: bytes) -> bytes:
    return b"OK %d\r\n%s\r\n" % (len(body), body)


def encode_error(exc: LogdError) -> bytes:
    reason = exc.reason().replace("\r", " ").replace("\n", " ")
    return f"{exc.kind} {reason}\r\n".encode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Ok:
    pass


@dataclass(frozen=True, slots=True)
class OkId:
    id: int


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes


@dataclass(frozen=True, slots=True)
class Eof:
    pass


def read_records_pure(
    buf: bytes | bytearray | memoryview, pos: int, max_body: int, record_type: type = Record,
    limit: int = 0,
) -> tuple[list[Record], int]:
    """The whole, valid records from ``pos`` of ``buf`` (header, CRLF, CRC as
    ``record.parse``; a body of at most ``max_body`` bytes) whose ids run on
    consecutively, at most ``limit`` of them (0: no limit), as
    ``record_type(id, body, more)``; and the offset after the last. Stops at
    anything else and never raises for it: the caller judges what is there.
    """
    out: list[Record] = []
    next_id = 0  # 0: any first id (ids are >= 1)
    end = len(buf)
    while pos < end and (limit <= 0 or len(out) < limit):
        try:
            h = read_header(buf, pos)
        except RecordError:
            break
        if h is None:
            break
        id, size, more, crc, length = h  # unpacked: cheaper than five attribute reads
        start = pos + length
        stop = start + size
        if size > max_body or (next_id and id != next_id) or stop + 2 > end or buf[stop : stop + 2] != CRLF:
            break
        body = bytes(buf[start:stop])
        if crc32(body, crc32(buf[pos + 1 : start - 11])) != crc:  # see record.parse
            break
        out.append(record_type(id, body, more))
        next_id = id + 1
        pos = stop + 2
    return out, pos


# The run reader (logd/_speedups.c's read_records when built).
_read_records = read_records_pure if _native is None else _native.read_records
# Records per run: fewer than the cycle collector's young-generation threshold
# (700 by default), so a run of tracked records (the pure path's; C untracks
# its own) sets off no collection while it is alive. Runs this long already
# amortise a call over hundreds of records.
MAX_RUN = 512


# Bounds on what a server may send; past them the reply is a ProtocolError,
# never an unbounded buffer (issue 7, item 9). Error lines carry a short reason
# and a few fields, so 4 KiB is ample; a record header is at most
# record.MAX_HEADER bytes, a body at most max_body.
MAX_REPLY_LINE = 4096
MAX_RECORD_HEADER = MAX_HEADER


class ReplyParser:
    """Incremental reply parser for clients.

    The caller says what it expects, since ``OK <n>`` is an id after MSG and
    a body length after STATS: ``next_reply()``, ``next_body()`` and, inside a
    READ stream, ``next_record()`` or ``next_records()``. Each returns NEED_DATA
    when more bytes are due. Error replies come back as raised ``LogdError`` subclasses.

    Nothing the server sends is trusted: a line longer than ``max_line``, a
    body or record longer than ``max_body``, or a reply of the wrong shape
    raises ``ProtocolError`` as soon as the bytes show it, so at most
    ``max_body`` plus one receive is ever buffered. No other exception
    escapes (no bare ``ValueError``).
    """

    def __init__(self, max_body: int = 64 * 1024 * 1024, max_line: int = MAX_REPLY_LINE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_body = max_body
        self.max_line = max_line

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` (copied: the caller may reuse its buffer)."""
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def _find_line(self, limit: int) -> int:
        """The offset of the CRLF ending the line at ``_pos``; -1 if more bytes are due.

        Raises:
            ProtocolError: ``limit`` bytes and no CRLF.
        """
        pos = self._pos
        nl = self._buf.find(CRLF, pos, pos + limit + 2)
        # limit bytes and a lone '\r' may still be a valid line.
        if nl < 0 and len(self._buf) - pos > limit + 1:
            raise ProtocolError(f"reply line longer than {limit} bytes")
        return nl

    def _line(self) -> bytes | None:
        nl = self._find_line(self.max_line)
        if nl < 0:
            return None
        line = bytes(self._buf[self._pos : nl])
        self._pos = nl + 2
        return line

    @staticmethod
    def _check_error(line: bytes) -> None:
        if line.startswith(b"ERR"):
            kind, _, reason = line.decode("utf-8", "replace").partition(" ")
            if kind in ("ERR", "ERR_CLIENT"):
                raise errors.from_reply(kind, reason)

    @staticmethod
    def _ok_number(line: bytes) -> int | None:
        """``OK <n>`` -> n; None for any other line."""
        digits = line[3:]
        if line.startswith(b"OK ") and digits.isdigit() and len(digits) <= MAX_INT_DIGITS:
            return int(digits)
        return None

    def next_reply(self) -> Ok | OkId | Pong | NeedData:
        line = self._line()
        if line is None:
            return NEED_DATA
        if line == b"OK":
            return Ok()
        if line == b"PONG":
            return Pong()
        n = self._ok_number(line)
        if n is not None:
            return OkId(n)
        self._check_error(line)
        raise ProtocolError(f"unexpected reply {line[:80]!r}")

    def next_ok_text(self) -> str | NeedData:
        """``OK <words>`` (ACCEPT's reply) -> the words; an error line raises its class."""
        line = self._line()
        if line is None:
            return NEED_DATA
        if line.startswith(b"OK "):
            return line[3:].decode("utf-8", "replace")
        self._check_error(line)
        raise ProtocolError(f"unexpected reply {line[:80]!r}")

    def next_body(self) -> Body | NeedData:
        nl = self._find_line(self.max_line)
        if nl < 0:
            return NEED_DATA
        line = bytes(self._buf[self._pos : nl])
        size = self._ok_number(line)
        if size is None:
            self._pos = nl + 2
            self._check_error(line)
            raise ProtocolError(f"expected a body reply, got {line[:80]!r}")
        if size > self.max_body:
            raise ProtocolError(f"body of {size} bytes exceeds the limit of {self.max_body}")
        start = nl + 2
        if len(self._buf) < start + size + 2:
            return NEED_DATA
        if self._buf[start + size : start + size + 2] != CRLF:
            raise ProtocolError("body not followed by CRLF")
        self._pos = start + size + 2
        return Body(bytes(self._buf[start : start + size]))

    def next_records(self) -> list[Record] | Eof | NeedData:
        """The next items of a READ stream, many at once: the verified records
        buffered whose ids run on consecutively, up to ``MAX_RUN`` (a list of
        at least one; the next call's first id may break the run), or what
        ``next_record()`` returns when no record starts the buffer (Eof,
        NEED_DATA, an error).

        Raises:
            As ``next_record()``.
        """
        run, end = _read_records(self._buf, self._pos, self.max_body, Record, MAX_RUN)
        if run:
            self._pos = end
            return run
        got = self.next_record()
        return [got] if isinstance(got, Record) else got

    def next_record(self) -> Record | Eof | NeedData:
        """The next item of a READ stream: a verified record, or Eof.

        Raises:
            ChecksumError: the record's checksum does not match.
            ProtocolError: the bytes are not a record.
            LogdError: the server ended the stream with an error line.
        """
        buf = self._buf
        pos = self._pos
        run, end = _read_records(buf, pos, self.max_body, Record, 1)
        if run:
            self._pos = end
            return run[0]
        if pos >= len(buf):
            return NEED_DATA
        if buf[pos] != 0x2B:  # '+'
            # An error line (ERR CORRUPT ..., ERR_CLIENT NOTRETAINED ...) is
            # longer than a record header may be: judge it by the reply line
            # limit, so it decodes to its class (issue 7, item 9).
            line = self._line()
            if line is None:
                return NEED_DATA
            self._check_error(line)
            raise ProtocolError(f"expected a record, got {line[:80]!r}")
        try:
            h = read_header(buf, pos)
        except RecordError as exc:
            if buf.startswith(b"+EOF\r\n", pos):
                self._pos = pos + 6
                return Eof()
            if exc.reason != "malformed record header":  # too long: no line to show
                raise ProtocolError(exc.reason) from None
            header = bytes(buf[pos + 1 : pos + MAX_RECORD_HEADER]).partition(CRLF)[0]
            raise ProtocolError(f"{exc.reason} {header!r}") from None
        if h is None:
            return NEED_DATA
        id, size, more, crc, length = h  # unpacked: cheaper than five attribute reads
        if size > self.max_body:
            raise ProtocolError(f"record of {size} bytes exceeds the limit of {self.max_body}")
        start = pos + length
        stop = start + size
        if len(buf) < stop + 2:
            return NEED_DATA
        if buf[stop : stop + 2] != CRLF:
            raise ProtocolError(f"record {id} body not followed by CRLF")
        body = bytes(buf[start:stop])
        if crc32(body, crc32(buf[pos + 1 : start - 11])) != crc:  # see record.parse
            raise errors.ChecksumError(f"checksum mismatch for record {id}")
        self._pos = stop + 2
        return Record(id, body, more)
