"""The replication wire format, with no sockets: frame encoders, the one frame
parser, and the two msgpack hellos. docs/protocol.rst ("Replication") has it
byte by byte.

After ``REPLICATE <start> <end> <offset> <hello>`` the primary answers with an
error line, or with ``OK <len>\\r\\n<msgpack map>\\r\\n`` (``encode_body``'s
form: the primary's hello) followed by frames::

    +DATA <partition> <offset> <count>\\r\\n<count raw bytes of the partition file>
    +NEXT <partition> <first id>\\r\\n      the partition before is sealed; this one begins
    +HEAD <committed id> <partition> <offset>\\r\\n   heartbeat while idle
    +FIRST <partition> <first id>\\r\\n     retention moved: the first retained partition
    +EOF\\r\\n                              ``end`` reached
    +REFUSED <final id> <new primary or ->\\r\\n  the primary refuses writes: all up to
                                          its final id is sent; the stream ends
    ERR ... / ERR_CLIENT ...\\r\\n           the stream ends (shutdown, retention)

A DATA frame's bytes carry no trailing CRLF: they are a byte range of the
file, which already ends in a record's CRLF. Frames start with ``+`` and a
capital letter, records with ``+`` and a digit, so nothing inside a frame
header can be taken for a record, and ``nc`` output stays readable.

``FrameParser`` follows h11's shape, like ``CommandParser``: feed bytes with
``receive_data()``, take events with ``next_event()`` until ``NEED_DATA``. A
DATA frame comes out as one or more ``Data`` events as its bytes arrive (a
catch-up frame can be a whole partition: it is never buffered whole here);
each says where its bytes belong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import msgpack

from ..errors import ProtocolError, from_reply
from ..log.meta import parse_epochs
from .commands import CRLF, MAX_INT_DIGITS, NEED_DATA, NeedData

__all__ = [
    "PrimaryHello", "FollowerHello", "Data", "Next", "HeadFrame", "First", "End", "RefusedFrame", "Event",
    "FrameParser", "encode_data", "encode_next", "encode_head", "encode_first", "encode_refused",
    "encode_hello_reply", "encode_follower_hello",
    "decode_follower_hello", "encode_ack", "MAX_FRAME_LINE",
]

MAX_FRAME_LINE = 1024  # an error line is the longest; frame headers are < 80 bytes
_MAX_HELLO = 64 * 1024


@dataclass(frozen=True, slots=True)
class PrimaryHello:
    """What the primary says after OK: who it is and where the stream starts."""

    history: str | None  # its meta file's history id (None: unknown, an old directory)
    head: int  # its last committed id
    first_partition: int  # first retained partition
    first_id: int  # first retained id
    partition: int  # the stream starts here ...
    offset: int  # ... at this byte offset,
    next_id: int  # with this record
    partition_first_id: int  # the first id of the start partition (names its file)
    epochs: tuple[tuple[int, int], ...] = ()  # its meta epochs, (epoch, first id); (): unknown


@dataclass(frozen=True, slots=True)
class FollowerHello:
    """What a follower says about its copy in REPLICATE's fourth argument."""

    history: str | None  # None: an empty copy, ready to adopt the primary's history
    last_id: int  # its last record (0: none)
    last_crc: int  # that record's CRC (0: none)
    name: str = ""
    epochs: tuple[tuple[int, int], ...] = ()  # its copy's meta epochs; (): unknown (older follower)
    fsync: str = ""  # its --fsync policy ("": not said); --min-acks counts synced ids of "always"
    advertise: str = ""  # the address of the read replica serving its copy ("": not said)


@dataclass(frozen=True, slots=True)
class Data:
    partition: int
    offset: int  # of data[0] in the partition file
    data: bytes
    final: bool  # the last chunk of its DATA frame (the frame ends at a MSG boundary)


@dataclass(frozen=True, slots=True)
class Next:
    partition: int
    first_id: int


@dataclass(frozen=True, slots=True)
class HeadFrame:
    id: int
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class First:
    """The primary's retention moved: partitions before ``partition`` are gone."""

    partition: int
    first_id: int


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class RefusedFrame:
    """The primary refuses writes; everything up to ``final`` was sent. The stream ends."""

    final: int
    new_primary: str  # "": none named (``-`` on the wire)


Event = Union[PrimaryHello, Data, Next, HeadFrame, First, End, RefusedFrame]

# -- encoders ----------------------------------------------------------------------


def encode_data(partition: int, offset: int, count: int) -> bytes:
    """The header of a DATA frame; ``count`` raw bytes follow (sent by sendfile)."""
    return b"+DATA %d %d %d\r\n" % (partition, offset, count)


def encode_next(partition: int, first_id: int) -> bytes:
    return b"+NEXT %d %d\r\n" % (partition, first_id)


def encode_head(id: int, partition: int, offset: int) -> bytes:
    return b"+HEAD %d %d %d\r\n" % (id, partition, offset)


def _with_epochs(doc: dict[str, Any], epochs: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    """``epochs`` (issue 10) only when known: an older peer's bytes stay as they were."""
    if epochs:
        doc["epochs"] = [list(e) for e in epochs]
    return doc


def encode_first(partition: int, first_id: int) -> bytes:
    return b"+FIRST %d %d\r\n" % (partition, first_id)


def encode_refused(final: int, new_primary: str) -> bytes:
    """``+REFUSED <final id> <new primary or ->``: the last frame of a refusing primary's stream."""
    if new_primary and not _address_ok(new_primary):
        raise ValueError(f"new primary {new_primary[:80]!r} is not one printable word")
    return b"+REFUSED %d %s\r\n" % (final, new_primary.encode() if new_primary else b"-")


def _address_ok(text: str) -> bool:
    return 0 < len(text) <= 200 and text.isascii() and text.isprintable() and " " not in text


def encode_hello_reply(hello: PrimaryHello) -> bytes:
    body: bytes = msgpack.packb(_with_epochs({
        "history": hello.history, "head": hello.head, "first_partition": hello.first_partition,
        "first_id": hello.first_id, "partition": hello.partition, "offset": hello.offset,
        "next_id": hello.next_id, "partition_first_id": hello.partition_first_id,
    }, hello.epochs))
    return b"OK %d\r\n%s\r\n" % (len(body), body)


def encode_follower_hello(hello: FollowerHello) -> bytes:
    doc = _with_epochs({"history": hello.history, "last_id": hello.last_id, "last_crc": hello.last_crc,
                        "name": hello.name, "fsync": hello.fsync}, hello.epochs)
    if hello.advertise:
        doc["advertise"] = hello.advertise
    data: bytes = msgpack.packb(doc)
    return data


def _uint(doc: dict[Any, Any], key: str, what: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"{what} {key!r} must be a non-negative integer, got {value!r}")
    return value


def _history(doc: dict[Any, Any], what: str) -> str | None:
    value = doc.get("history")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{what} 'history' must be a string or nil, got {value!r}")
    return value


def _map(raw: bytes, what: str) -> dict[Any, Any]:
    try:
        doc = msgpack.unpackb(raw)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ValueError(f"{what} is not msgpack ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what} is not a msgpack map")
    return doc


def decode_follower_hello(raw: bytes) -> FollowerHello:
    """Raises: ValueError, saying what is wrong (the handler answers BADREQUEST)."""
    doc = _map(raw, "hello")
    name, fsync, advertise = doc.get("name", ""), doc.get("fsync", ""), doc.get("advertise", "")
    if not isinstance(name, str):
        raise ValueError(f"hello 'name' must be a string, got {name!r}")
    if not isinstance(fsync, str):
        raise ValueError(f"hello 'fsync' must be a string, got {fsync!r}")
    if not isinstance(advertise, str):
        raise ValueError(f"hello 'advertise' must be a string, got {advertise!r}")
    return FollowerHello(_history(doc, "hello"), _uint(doc, "last_id", "hello"),
                         _uint(doc, "last_crc", "hello"), name[:200], _epochs(doc, "hello"), fsync[:40],
                         advertise[:200])


def _decode_primary_hello(raw: bytes) -> PrimaryHello:
    doc = _map(raw, "primary hello")
    fields = ("head", "first_partition", "first_id", "partition", "offset", "next_id",
              "partition_first_id")
    h, fp, fi, pa, off, nx, pf = (_uint(doc, k, "primary hello") for k in fields)
    return PrimaryHello(_history(doc, "primary hello"), h, fp, fi, pa, off, nx, pf,
                        _epochs(doc, "primary hello"))


def _epochs(doc: dict[Any, Any], what: str) -> tuple[tuple[int, int], ...]:
    """The optional ``epochs`` field, checked as the meta file's are; missing: ()."""
    try:
        return parse_epochs(doc.get("epochs", []), allow_empty=True)
    except ValueError as exc:
        raise ValueError(f"{what} 'epochs': {exc}") from None


def encode_ack(written: tuple[int, int, int], synced: tuple[int, int, int]) -> bytes:
    """The follower's report: ``ACK <partition> <offset> <id> <synced ...>`` (inline)."""
    return b"ACK %d %d %d %d %d %d\r\n" % (*written, *synced)


# -- the parser --------------------------------------------------------------------


def _numbers(line: bytes, count: int) -> list[int]:
    parts = line.split(b" ")
    if len(parts) != count + 1 or not all(
        p.isdigit() and len(p) <= MAX_INT_DIGITS for p in parts[1:]
    ):
        raise ProtocolError(f"malformed replication frame {line[:80]!r}")
    return [int(p) for p in parts[1:]]


def _refused(line: bytes) -> RefusedFrame:
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > MAX_INT_DIGITS:
        raise ProtocolError(f"malformed replication frame {line[:80]!r}")
    new = parts[2].decode("ascii", "replace")
    if new != "-" and not _address_ok(new):
        raise ProtocolError(f"malformed new primary in {line[:80]!r}")
    return RefusedFrame(int(parts[1]), "" if new == "-" else new)


class FrameParser:
    """Incremental parser of a REPLICATE reply; see the module docstring.

    Raises (from ``next_event``):
        LogdError: the primary sent an error line (``from_reply`` maps it to
            its class: NotRetained, Diverged, ShuttingDown, ...).
        ProtocolError: the bytes are not a replication stream.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._hello_seen = False
        self._data_left = 0  # bytes of the current DATA frame still due
        self._data_at = (0, 0)  # (partition, offset) of the next of them

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes | memoryview) -> None:
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def _line(self) -> bytes | None:
        buf, pos = self._buf, self._pos
        nl = buf.find(b"\n", pos, pos + MAX_FRAME_LINE + 1)
        if nl < 0:
            if len(buf) - pos > MAX_FRAME_LINE:
                raise ProtocolError(f"replication line longer than {MAX_FRAME_LINE} bytes")
            return None
        if nl == pos or buf[nl - 1] != 0x0D:
            raise ProtocolError("replication line not ended by CRLF")
        self._pos = nl + 1
        return bytes(buf[pos : nl - 1])

    def next_event(self) -> Event | NeedData:
        if self._data_left:
            return self._data()
        start = self._pos
        line = self._line()
        if line is None:
            return NEED_DATA
        if line.startswith((b"ERR ", b"ERR_CLIENT ")):
            kind, _, reason = line.decode("utf-8", "replace").partition(" ")
            raise from_reply(kind, reason)
        if not self._hello_seen:
            if not line.startswith(b"OK "):
                raise ProtocolError(f"expected OK <len> or an error, got {line[:80]!r}")
            (size,) = _numbers(line, 1)
            if size > _MAX_HELLO:
                raise ProtocolError(f"primary hello of {size} bytes")
            end = self._pos + size
            if len(self._buf) < end + 2:
                self._pos = start  # the whole reply, or nothing
                return NEED_DATA
            if self._buf[end : end + 2] != CRLF:
                raise ProtocolError("primary hello not followed by CRLF")
            raw = bytes(self._buf[self._pos : end])
            self._pos = end + 2
            try:
                hello = _decode_primary_hello(raw)
            except ValueError as exc:
                raise ProtocolError(str(exc)) from None
            self._hello_seen = True
            return hello
        word = line.split(b" ", 1)[0]
        if word == b"+DATA":
            partition, offset, count = _numbers(line, 3)
            if count == 0:
                raise ProtocolError("empty DATA frame")
            self._data_left, self._data_at = count, (partition, offset)
            return self._data()
        if word == b"+NEXT":
            return Next(*_numbers(line, 2))
        if word == b"+HEAD":
            return HeadFrame(*_numbers(line, 3))
        if word == b"+FIRST":
            return First(*_numbers(line, 2))
        if line == b"+EOF":
            return End()
        if word == b"+REFUSED":
            return _refused(line)
        raise ProtocolError(f"unknown replication frame {line[:80]!r}")

    def _data(self) -> Data | NeedData:
        avail = len(self._buf) - self._pos
        if not avail:
            return NEED_DATA
        n = min(avail, self._data_left)
        chunk = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        self._data_left -= n
        partition, offset = self._data_at
        self._data_at = (partition, offset + n)
        return Data(partition, offset, chunk, final=self._data_left == 0)
