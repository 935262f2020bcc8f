"""The logd wire protocol's requests, with no sockets: bytes in, commands out.

Requests (docs/protocol.rst has the byte-by-byte description)::

    <CMD> <nargs>\\r\\n               then, nargs times:
    <len> <bytes>\\r\\n               exactly len bytes, any byte allowed
    <CMD>\\r\\n                       zero arguments, for nc and telnet
    <CMD> <word> <word>...\\r\\n      inline, for hand use (Redis's inline form)

A command line may end in LF alone (``nc`` without ``-C``); a framed
argument always ends in CRLF, since a length off by one would otherwise take
the CR into the message unnoticed. The line is inline unless it is exactly
``<CMD> <number>``: one number after the name is always the count.

``CommandParser`` follows h11's shape: ``receive_data()`` feeds bytes,
``next_command()`` returns a command or ``NEED_DATA``. It raises
``ProtocolError`` when framing breaks (the connection must close) and another
``ClientError`` when a well-framed command is invalid (the command's bytes are
consumed; the connection stays usable).

The client's side (replies, the READ record stream) is ``replies.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from ..errors import InvalidArgument, ProtocolError, UnknownCommand
from ..speedups import native as _native

__all__ = [
    "NEED_DATA",
    "NeedData",
    "CRLF",
    "MAX_INT_DIGITS",
    "Msg",
    "Read",
    "Replicate",
    "Ack",
    "Head",
    "Ping",
    "Close",
    "Shutdown",
    "Stats",
    "Refuse",
    "Accept",
    "Auth",
    "Command",
    "Limits",
    "CommandParser",
    "encode_command",
]

CRLF = b"\r\n"
MAX_INT_DIGITS = 19  # ids and counts fit in a signed 64-bit integer


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


# -- commands -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Msg:
    bodies: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Read:
    start: int
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Replicate:
    """``REPLICATE <start> [<end> [<offset> [<hello>]]]``: partitions ``start``
    (0: the first retained) to ``end`` (0: keep streaming), from byte
    ``offset`` of ``start``; ``hello`` is the follower's msgpack map (empty: an
    anonymous reader), decoded by the handler (``replication.py``)."""

    start: int
    end: int = 0
    offset: int = 0
    hello: bytes = b""


@dataclass(frozen=True, slots=True)
class Ack:
    """A follower's report, on its REPLICATE connection: never answered."""

    partition: int
    offset: int
    id: int
    synced_partition: int
    synced_offset: int
    synced_id: int


@dataclass(frozen=True, slots=True)
class Head:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Stats:
    format: str = "text"


@dataclass(frozen=True, slots=True)
class Refuse:
    """``REFUSE [partition] [new-primary]``: stop taking writes (0: now; the
    handler refuses other partitions); ``new_primary`` is ``host:port`` or ""."""

    partition: int = 0
    new_primary: str = ""


@dataclass(frozen=True, slots=True)
class Accept:
    partition: int = 0


@dataclass(frozen=True, slots=True)
class Auth:
    """``AUTH <token>``: the admin token, for admin commands from any address."""

    token: bytes = field(repr=False)


Command = Union[Msg, Read, Replicate, Ack, Head, Ping, Close, Shutdown, Stats, Refuse, Accept, Auth]


def _int_arg(name: str, raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > MAX_INT_DIGITS:
        raise InvalidArgument(f"{name} must be a non-negative integer, got "
                              f"{raw[:40].decode('utf-8', 'replace')!r}")
    return int(raw)


_Builder = Callable[[list[bytes]], "Command"]


def _no_args(cls: Callable[[], Command]) -> _Builder:
    def build(args: list[bytes]) -> Command:
        if args:
            raise InvalidArgument(f"{cls.__name__.upper()} takes no arguments")
        return cls()

    return build


def _build_msg(args: list[bytes]) -> Msg:
    if not args:
        raise InvalidArgument("MSG must supply at least one message")
    if not all(args):
        i = next(i for i, body in enumerate(args, 1) if not body)
        raise InvalidArgument(f"empty message not allowed (argument {i})")
    return Msg(tuple(args))


def _ints(cls: Callable[..., Command], names: tuple[str, ...], required: int) -> _Builder:
    upper = cls.__name__.upper()

    def build(args: list[bytes]) -> Command:
        if not required <= len(args) <= len(names):
            want = " ".join(n if i < required else f"[{n}]" for i, n in enumerate(names))
            raise InvalidArgument(f"usage: {upper} {want}")
        return cls(*(_int_arg(n, a) for n, a in zip(names, args)))

    return build


def _build_replicate(args: list[bytes]) -> Replicate:
    if not 1 <= len(args) <= 4:
        raise InvalidArgument("usage: REPLICATE start [end [offset [hello]]]")
    names = ("start", "end", "offset")
    start, end, offset = [_int_arg(n, a) for n, a in zip(names, args[:3])] + [0] * (3 - min(3, len(args)))
    return Replicate(start, end, offset, args[3] if len(args) == 4 else b"")


def _build_stats(args: list[bytes]) -> Stats:
    if not args:
        return Stats()
    if len(args) == 1 and args[0].lower() in (b"text", b"msgpack"):
        return Stats(args[0].lower().decode())
    raise InvalidArgument("usage: STATS [text|msgpack]")


MAX_ADDRESS = 300


def check_address(raw: bytes) -> str:
    """A ``host:port`` (``[v6]:port`` too) as text, or InvalidArgument."""
    host, sep, port = raw.rpartition(b":")
    if (not sep or not host or not port.isdigit() or len(port) > 5 or int(port) > 65535
            or len(raw) > MAX_ADDRESS or not raw.isascii() or any(c in raw for c in b" \t\r\n")):
        raise InvalidArgument(f"new primary must be host:port, got {raw[:60]!r}")
    return raw.decode("ascii")


def _build_refuse(args: list[bytes]) -> Refuse:
    # The partition may be left out: REFUSE host:port names the new primary alone.
    if args and args[0].isdigit():
        partition, rest = _int_arg("partition", args[0]), args[1:]
    else:
        partition, rest = 0, args
    if len(rest) > 1:
        raise InvalidArgument("usage: REFUSE [partition] [new-primary host:port]")
    return Refuse(partition, check_address(rest[0]) if rest else "")


def _build_auth(args: list[bytes]) -> Auth:
    if len(args) != 1 or not args[0]:
        raise InvalidArgument("usage: AUTH <token>")
    return Auth(args[0])


_BUILDERS: dict[bytes, _Builder] = {
    b"MSG": _build_msg,
    b"READ": _ints(Read, ("start", "limit"), 1),
    b"REPLICATE": _build_replicate,
    b"ACK": _ints(Ack, ("partition", "offset", "id", "synced_partition", "synced_offset",
                        "synced_id"), 6),
    b"HEAD": _no_args(Head),
    b"PING": _no_args(Ping),
    b"CLOSE": _no_args(Close),
    b"SHUTDOWN": _no_args(Shutdown),
    b"STATS": _build_stats,
    b"REFUSE": _build_refuse,
    b"ACCEPT": _ints(Accept, ("partition",), 0),
    b"AUTH": _build_auth,
}


# The native fast path for the argument loop below (logd/_speedups.c): it takes
# the complete, well-formed arguments and stops at anything else, which the
# Python loop then judges; None runs the loop alone (pure Python).
_frame_args = _native.frame_args if _native is not None else None
# ... and for a whole framed command at once, the common case (None: the loop decides).
_frame_command = _native.frame_command if _native is not None else None

_NO_CRLF = (
    "argument not followed by CRLF (length mismatch, or nc without -C?); "
    "framed arguments end in CRLF, or type them inline: 'MSG hello world'"
)


def _build(name: bytes, args: list[bytes]) -> Command:
    build = _BUILDERS.get(name)
    if build is None:
        raise UnknownCommand(f"unknown command {name[:32].decode('ascii', 'replace')!r}")
    return build(args)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may be. Past these, the connection is closed."""

    max_line: int = 1024
    max_message: int = 1024 * 1024
    max_args: int = 10_000
    max_request: int = 64 * 1024 * 1024


class CommandParser:
    """Incremental request parser; see the module docstring."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._buf = bytearray()
        self._pos = 0
        self._name: bytes | None = None
        self._nargs = 0
        self._args: list[bytes] = []
        self._size = 0
        self._eof = False

    @property
    def in_progress(self) -> bool:
        """True when part of a command is buffered (for the partial-command timeout)."""
        return self._name is not None or len(self._buf) > self._pos

    def receive_data(self, data: bytes) -> None:
        """Feed bytes; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        if self._pos and self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_command(self) -> Command | NeedData:
        """Return the next complete command, or NEED_DATA.

        Raises:
            ProtocolError: framing is broken; close the connection after replying.
            ClientError: the command was well framed but invalid; carry on.
        """
        buf = self._buf
        limits = self.limits
        if self._name is None:
            if _frame_command is not None:
                framed = _frame_command(buf, self._pos, limits.max_line, limits.max_args,
                                        limits.max_message, limits.max_request)
                if framed is not None:
                    name, args, self._pos = framed
                    return _build(name, args)
            while True:
                nl = buf.find(b"\n", self._pos, self._pos + limits.max_line + 2)
                if nl < 0:
                    # max_line bytes and a lone '\r' may still be a valid line.
                    if len(buf) - self._pos > limits.max_line + 1:
                        raise ProtocolError(f"command line longer than {limits.max_line} bytes")
                    return self._need_data()
                line = bytes(buf[self._pos : nl])
                self._pos = nl + 1
                parts = line.split()
                if parts:
                    break  # empty lines are skipped, as typed into telnet
            if len(parts) > 1 and not (len(parts) == 2 and parts[1].isdigit()):
                # Inline, for hand use: the words after the name are the arguments.
                if len(parts) - 1 > limits.max_args:  # the line is consumed: not fatal
                    raise InvalidArgument(f"too many arguments: {len(parts) - 1} (max {limits.max_args})")
                return _build(parts[0].upper(), parts[1:])
            count = parts[1] if len(parts) == 2 else b"0"
            if len(count) > 6 or int(count) > limits.max_args:
                raise ProtocolError(f"too many arguments: {count[:20].decode()} (max {limits.max_args})")
            nargs = int(count)
            self._name = parts[0].upper()
            self._nargs = nargs
            self._args = []
            self._size = 0
        args = self._args
        nargs = self._nargs
        pos = self._pos
        size_total = self._size
        max_message, max_request = limits.max_message, limits.max_request
        end = len(buf)
        view = memoryview(buf)  # one copy per argument, not two; released below
        try:
            if _frame_args is not None and len(args) < nargs:
                pos, size_total = _frame_args(view, pos, args, nargs, size_total, max_message, max_request)
            while len(args) < nargs:
                sp = buf.find(b" ", pos, pos + 21)
                raw = buf[pos:sp] if sp >= 0 else buf[pos : pos + 21]
                # Fail at the first wrong byte: a person typing waits for nothing.
                if (sp >= 0 or raw) and not raw.isdigit():
                    raise ProtocolError(self._expected_argument(len(args), bytes(raw[:20])))
                if sp < 0:
                    if len(raw) > 20:
                        raise ProtocolError("argument length longer than 20 digits")
                    return self._need_data()
                size = int(raw)
                if size > max_message:
                    raise ProtocolError(f"argument of {size} bytes exceeds max {max_message}")
                if size_total + size > max_request:
                    raise ProtocolError(f"request exceeds max {max_request} bytes")
                stop = sp + 1 + size
                if end <= stop:
                    return self._need_data()
                # Exactly CRLF after the bytes, never LF alone: a length one too
                # long would otherwise swallow the CR into the message unnoticed.
                if end < stop + 2:
                    if end > stop and buf[stop] != 0x0D:  # fail now, not at the timeout
                        raise ProtocolError(_NO_CRLF)
                    return self._need_data()
                if buf[stop] != 0x0D or buf[stop + 1] != 0x0A:
                    raise ProtocolError(_NO_CRLF)
                after = stop + 2
                args.append(bytes(view[sp + 1 : stop]))
                size_total += size
                pos = after
        finally:
            view.release()
            self._pos = pos
            self._size = size_total
        name = self._name
        self._name = None
        self._args = []
        return _build(name, args)

    def _expected_argument(self, index: int, got: bytes) -> str:
        name = (self._name or b"").decode("ascii", "replace")
        return (
            f"expected argument {index + 1} of {self._nargs} as '<len> <bytes>', got {got!r}; "
            f"'{name} {self._nargs}' announces {self._nargs} framed argument(s). "
            f"To type arguments on the command line, put two or more words after the name "
            f"(e.g. 'READ 1 10', 'MSG hello')"
        )

    def _need_data(self) -> NeedData:
        if self._eof and self.in_progress:
            raise ProtocolError("connection closed inside a command")
        return NEED_DATA


def encode_command(name: str, *args: bytes | str | int) -> bytes:
    """Client side: frame one command."""
    parts = [b"%s %d\r\n" % (name.encode(), len(args))]
    for arg in args:
        if isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, str):
            arg = arg.encode()
        parts.append(b"%d %s\r\n" % (len(arg), arg))
    return b"".join(parts)
