"""The wire protocol, both directions, with no sockets.

Requests: every case in ``cases/`` (``NAME.txt`` holds the raw request bytes,
``NAME.expected`` one Python expression per outcome, ``#`` comments, and an
optional ``limits: key=value ...`` line) plus a few generated ones (binary
bodies, a 1,000-command pipeline) is fed to ``CommandParser`` whole, line by
line, byte by byte and in seeded random chunks; every split must give exactly
the expected outcomes. An outcome is a command, ``Err(cls)`` for a raised
error (a ``ProtocolError`` ends the run, as the server closes the
connection; any other ``ClientError`` does not), or ``EOF_ERROR`` when the
peer closed inside a command.

Replies: exact-bytes tables for the encoders, and a table of reply streams
read by ``ReplyParser`` in the same splits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from zlib import crc32
from typing import Iterator

import pytest

from logd import errors
from logd.errors import (
    ChecksumError,
    ClientError,
    CorruptLogError,
    DiskFull,
    Forbidden,
    FsyncFailed,
    InvalidArgument,
    LogdError,
    NotRetained,
    OutOfRange,
    ProtocolError,
    Refused,
    ServerError,
    ShuttingDown,
    StorageError,
    TooManyClients,
    UnknownCommand,
)
from logd.protocol import (
    EOF,
    NEED_DATA,
    OK,
    PONG,
    Accept,
    Body,
    Close,
    CommandParser,
    Eof,
    Head,
    Limits,
    Msg,
    Ok,
    OkId,
    Ping,
    Pong,
    Read,
    Refuse,
    Replicate,
    ReplyParser,
    Shutdown,
    Stats,
    encode_body,
    encode_command,
    encode_error,
    encode_ok_id,
)
from logd.protocol import commands
from logd.record import Record, encode
from logd.speedups import native
from tests.chunkers import Chunker, by_line, bytewise, seeded, whole



@pytest.fixture(autouse=True, params=["pure", "native"])
def _framing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with the pure parser and with the native fast
    paths in front of it (logd/_speedups.c frame_command, frame_args)."""
    if request.param == "native":
        if native is None:
            pytest.skip("logd._speedups is not built (no compiler or Python headers at install, or LOGD_PURE=1)")
        monkeypatch.setattr(commands, "_frame_args", native.frame_args)
        monkeypatch.setattr(commands, "_frame_command", native.frame_command)
    else:
        monkeypatch.setattr(commands, "_frame_args", None)
        monkeypatch.setattr(commands, "_frame_command", None)
    return str(request.param)


CASES = Path(__file__).parent / "cases"
SEEDS = (0, 1, 2, 3)

# -- splitting --------------------------------------------------------------------

SPLITS: list[Chunker] = [whole, by_line, bytewise, *(seeded(s) for s in SEEDS)]
SPLIT_IDS = [s.__name__ for s in SPLITS]


def test_splitters_cover_the_data() -> None:
    data = bytes(range(256)) * 40 + b"\r\nA\r\n"
    for split in SPLITS:
        chunks = list(split(data))
        assert b"".join(chunks) == data
        assert all(chunks)
    assert len(list(seeded(0)(data))) > 3


# -- requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Err:
    cls: type

    def __repr__(self) -> str:
        return f"Err({self.cls.__name__})"


EOF_ERROR = "EOF_ERROR"  # ProtocolError raised after receive_data(b"")


def drain(parser: CommandParser, out: list[object]) -> bool:
    """Take every ready command; True when a framing error closed the connection."""
    while True:
        try:
            cmd = parser.next_command()
        except ProtocolError as exc:
            out.append(Err(type(exc)))
            return True
        except ClientError as exc:
            out.append(Err(type(exc)))
            continue
        if cmd is NEED_DATA:
            return False
        out.append(cmd)


def parse_requests(chunks: Iterator[bytes], limits: Limits = Limits()) -> list[object]:
    parser = CommandParser(limits)
    out: list[object] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        if drain(parser, out):
            return out
    parser.receive_data(b"")
    try:
        got = parser.next_command()
    except ProtocolError:
        out.append(EOF_ERROR)
    else:
        assert got is NEED_DATA
        assert not parser.in_progress
    return out


@dataclass
class Case:
    name: str
    data: bytes
    expected: list[object]
    limits: Limits = Limits()


_NAMESPACE = {
    **{c.__name__: c for c in (Msg, Read, Replicate, Head, Ping, Close, Shutdown, Stats, Refuse, Accept)},
    **{c.__name__: c for c in (InvalidArgument, UnknownCommand, ProtocolError, ClientError)},
    "Err": Err,
    "EOF_ERROR": EOF_ERROR,
}


def load_case(txt: Path) -> Case:
    expected: list[object] = []
    limits = Limits()
    for line in txt.with_suffix(".expected").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("limits:"):
            kw = dict(item.split("=") for item in line[len("limits:") :].split())
            limits = Limits(**{k: int(v) for k, v in kw.items()})
            continue
        expected.append(eval(line, dict(_NAMESPACE)))  # noqa: S307 (test data we wrote)
    return Case(txt.stem, txt.read_bytes(), expected, limits)


def generated_cases() -> list[Case]:
    all_bytes = bytes(range(256))
    binary = Case(
        "gen_binary_bodies",
        encode_command("MSG", all_bytes, all_bytes[::-1], b"\r\n" * 3, b"\x00")
        + encode_command("READ", 1, 2),
        [Msg((all_bytes, all_bytes[::-1], b"\r\n" * 3, b"\x00")), Read(1, 2)],
    )
    # 1,000 pipelined commands in one buffer, large enough (> 64 KiB) for the
    # parser to compact its buffer along the way.
    rng = random.Random(1774)
    data = []
    want: list[object] = []
    for i in range(1000):
        kind = i % 4
        if kind == 0:
            bodies = tuple(bytes(rng.randrange(256) for _ in range(rng.randint(1, 220))) for _ in range(rng.randint(1, 3)))
            data.append(encode_command("MSG", *bodies))
            want.append(Msg(bodies))
        elif kind == 1:
            data.append(b"PING\r\n")
            want.append(Ping())
        elif kind == 2:
            data.append(encode_command("READ", i, i % 7))
            want.append(Read(i, i % 7))
        else:
            data.append(b"head 0\r\n")
            want.append(Head())
    pipeline = Case("gen_pipeline_1000", b"".join(data), want)
    assert len(pipeline.data) > 65536
    # Client errors in the middle of a pipeline leave everything after them intact.
    mixed = Case(
        "gen_pipeline_with_client_errors",
        (b"PING\r\nFOO\r\nMSG 1\r\n0 \r\n" + encode_command("MSG", b"ok")) * 200,
        [Ping(), Err(UnknownCommand), Err(InvalidArgument), Msg((b"ok",))] * 200,
    )
    return [binary, pipeline, mixed]


ALL_CASES = [load_case(p) for p in sorted(CASES.glob("*.txt"))] + generated_cases()


def test_corpus_is_there() -> None:
    names = {c.name for c in ALL_CASES}
    assert len(names) == len(ALL_CASES)
    assert {"all_commands", "bare_commands", "unknown_command", "eof_in_body"} <= names


@pytest.mark.parametrize("split", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("case", ALL_CASES, ids=[c.name for c in ALL_CASES])
def test_request_case(case: Case, split: Chunker) -> None:
    assert parse_requests(split(case.data), case.limits) == case.expected


def test_client_error_is_not_protocol_error() -> None:
    for cls in (InvalidArgument, UnknownCommand):
        assert issubclass(cls, ClientError) and not issubclass(cls, ProtocolError)


def test_bad_integer_is_quoted_as_text() -> None:
    # What the user typed, not Python's bytes repr (b'x').
    parser = CommandParser()
    parser.receive_data(b"READ x 1\r\nREAD 1 \xff\r\n")
    with pytest.raises(InvalidArgument) as info:
        parser.next_command()
    assert str(info.value) == "start must be a non-negative integer, got 'x'"
    with pytest.raises(InvalidArgument) as info:
        parser.next_command()
    assert str(info.value) == "limit must be a non-negative integer, got '\ufffd'"


def test_client_error_consumes_exactly_the_command() -> None:
    parser = CommandParser()
    parser.receive_data(b"NOPE 2\r\n1 a\r\n3 b\r\n\r\nPING\r\n")
    with pytest.raises(UnknownCommand) as info:
        parser.next_command()
    assert "NOPE" in str(info.value)
    assert parser.next_command() == Ping()
    assert not parser.in_progress


def test_in_progress_tracks_partial_commands() -> None:
    parser = CommandParser()
    assert not parser.in_progress
    parser.receive_data(b"MSG 1\r\n5 he")
    assert parser.next_command() is NEED_DATA
    assert parser.in_progress
    parser.receive_data(b"llo\r\n")
    assert parser.next_command() == Msg((b"hello",))
    assert not parser.in_progress


def test_eof_between_commands_is_clean() -> None:
    parser = CommandParser()
    parser.receive_data(b"PING\r\n")
    parser.receive_data(b"")
    assert parser.next_command() == Ping()
    assert parser.next_command() is NEED_DATA


def test_one_megabyte_message_at_the_default_limit() -> None:
    body = bytes(range(256)) * 4096
    assert len(body) == Limits().max_message
    data = encode_command("MSG", body) + b"PING\r\n"
    for split in (whole, by_line, seeded(9)):
        assert parse_requests(split(data)) == [Msg((body,)), Ping()]


def test_line_of_exactly_max_line_bytes_whole() -> None:
    limits = Limits(max_line=8)
    assert parse_requests(whole(b"SHUTDOWN\r\nPING\r\n"), limits) == [Shutdown(), Ping()]


def test_line_of_exactly_max_line_bytes_by_byte() -> None:
    limits = Limits(max_line=8)  # 'SHUTDOWN' is 8 bytes
    assert parse_requests(bytewise(b"SHUTDOWN\r\nPING\r\n"), limits) == [Shutdown(), Ping()]


def test_line_of_max_line_plus_one_is_rejected_in_every_split() -> None:
    limits = Limits(max_line=8)
    for split in SPLITS:
        assert parse_requests(split(b"SHUTDOWNX\r\n"), limits) == [Err(ProtocolError)]


def test_lf_command_line_is_answered_without_waiting() -> None:
    # Issue 7 item 13: 'PING\n' from nc without -C used to wait for a CR forever.
    parser = CommandParser()
    parser.receive_data(b"PING\n")
    assert parser.next_command() == Ping()
    assert not parser.in_progress


def test_typed_text_where_a_length_is_due_fails_at_once_and_says_how() -> None:
    parser = CommandParser()
    parser.receive_data(b"READ 1\nhel")  # no space yet: still wrong from its first byte
    with pytest.raises(ProtocolError) as info:
        parser.next_command()
    assert "'<len> <bytes>'" in str(info.value) and "READ 1 10" in str(info.value)


def test_lf_after_a_framed_argument_fails_at_once_and_names_nc_c() -> None:
    parser = CommandParser()
    parser.receive_data(b"MSG 1\n5 hello\n")
    with pytest.raises(ProtocolError) as info:
        parser.next_command()
    assert "nc without -C" in str(info.value) and "inline" in str(info.value)


# -- command encoding (client side) ------------------------------------------------


@pytest.mark.parametrize(
    "args, wire",
    [
        (("PING",), b"PING 0\r\n"),
        (("MSG", b"hello"), b"MSG 1\r\n5 hello\r\n"),
        (("MSG", b"a\r\nb", "x", 12), b"MSG 3\r\n4 a\r\nb\r\n1 x\r\n2 12\r\n"),
        (("READ", 5, 0), b"READ 2\r\n1 5\r\n1 0\r\n"),
        (("STATS", "msgpack"), b"STATS 1\r\n7 msgpack\r\n"),
    ],
)
def test_encode_command(args: tuple, wire: bytes) -> None:
    assert encode_command(*args) == wire


# -- reply encoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    "got, wire",
    [
        (OK, b"OK\r\n"),
        (PONG, b"PONG\r\n"),
        (EOF, b"+EOF\r\n"),
        (encode_ok_id(0), b"OK 0\r\n"),
        (encode_ok_id(42), b"OK 42\r\n"),
        (encode_ok_id(2**63 - 1), b"OK 9223372036854775807\r\n"),
        (encode_body(b""), b"OK 0\r\n\r\n"),
        (encode_body(b"head: 3\r\n"), b"OK 9\r\nhead: 3\r\n\r\n"),
        (encode_body(bytes(range(256))), b"OK 256\r\n" + bytes(range(256)) + b"\r\n"),
        (encode_error(InvalidArgument("MSG must supply at least one message")),
         b"ERR_CLIENT BADREQUEST MSG must supply at least one message\r\n"),
        (encode_error(UnknownCommand("unknown command 'FOO'")), b"ERR_CLIENT UNKNOWN unknown command 'FOO'\r\n"),
        (encode_error(ProtocolError("bad\r\nframing")), b"ERR_CLIENT PROTOCOL bad  framing\r\n"),
        (encode_error(OutOfRange("start 9 is past the head", first=1, head=3)),
         b"ERR_CLIENT RANGE start 9 is past the head (first=1 head=3)\r\n"),
        (encode_error(NotRetained("start 1 is gone", first=5, head=9)),
         b"ERR_CLIENT NOTRETAINED start 1 is gone (first=5 head=9)\r\n"),
        (encode_error(Refused("not the primary", primary="10.0.0.2:1774")),
         b"ERR_CLIENT REFUSED not the primary (primary=10.0.0.2:1774)\r\n"),
        (encode_error(Refused("not the primary")), b"ERR_CLIENT REFUSED not the primary\r\n"),
        (encode_error(Forbidden("no")), b"ERR_CLIENT FORBIDDEN no\r\n"),
        (encode_error(ServerError()), b"ERR INTERNAL\r\n"),
        (encode_error(ServerError("internal error")), b"ERR INTERNAL internal error\r\n"),
        (encode_error(DiskFull("no space")), b"ERR DISKFULL no space\r\n"),
        (encode_error(FsyncFailed("x")), b"ERR FSYNC x\r\n"),
        (encode_error(StorageError("x")), b"ERR STORAGE x\r\n"),
        (encode_error(CorruptLogError("bad crc", partition=2, offset=10, id=7)), b"ERR CORRUPT bad crc\r\n"),
        (encode_error(ShuttingDown("bye")), b"ERR SHUTDOWN bye\r\n"),
        (encode_error(TooManyClients("too many")), b"ERR MAXCLIENTS too many\r\n"),
        (encode_error(ServerError("caf\u00e9")), "ERR INTERNAL caf\u00e9\r\n".encode()),
    ],
)
def test_reply_bytes(got: bytes, wire: bytes) -> None:
    assert got == wire


# -- reply parsing ------------------------------------------------------------------


@dataclass(frozen=True)
class Raised:
    """An error reply as the parser raised it: class, message and fields."""

    cls: type
    message: str = ""
    fields: tuple = ()


def describe(exc: LogdError) -> Raised:
    fields: tuple = ()
    if isinstance(exc, OutOfRange):
        fields = (("first", exc.first), ("head", exc.head))
    elif isinstance(exc, Refused):
        fields = (("primary", exc.primary),)
    return Raised(type(exc), exc.message, fields)


STOPS = (ProtocolError,)  # after these the stream is unusable (ChecksumError is one)


def parse_replies(chunks: Iterator[bytes], calls: list[str]) -> list[object]:
    parser = ReplyParser()
    out: list[object] = []
    pending = iter(calls)
    call = next(pending, None)
    for chunk in chunks:
        parser.receive_data(chunk)
        while call is not None:
            try:
                got = getattr(parser, call)()
            except LogdError as exc:
                out.append(describe(exc))
                if isinstance(exc, STOPS):
                    return out
                call = next(pending, None)
                continue
            if got is NEED_DATA:
                break
            out.append(got)
            call = next(pending, None)
    assert call is None, f"stream ended while {call} still needed data"
    assert parser.buffered == 0
    return out


ALL = bytes(range(256))
R1, R2, R3 = encode(1, b"hello"), encode(2, ALL), encode(3, b"\r\n+EOF\r\n")
BAD_CRC = R1.replace(b"hello", b"jello")
RELABELLED = R1.replace(b"+1 ", b"+2 ", 1)

REPLY_CASES = {
    "simple": (
        b"OK\r\nOK 7\r\nPONG\r\nOK 0\r\nOK 9223372036854775807\r\n",
        ["next_reply"] * 5,
        [Ok(), OkId(7), Pong(), OkId(0), OkId(2**63 - 1)],
    ),
    "bodies": (
        b"OK 5\r\nhello\r\nOK 0\r\n\r\nOK 4\r\n\r\n\r\n\r\n" + encode_body(ALL),
        ["next_body"] * 4,
        [Body(b"hello"), Body(b""), Body(b"\r\n\r\n"), Body(ALL)],
    ),
    "read_stream": (
        OK + R1 + R2 + R3 + EOF + PONG,
        ["next_reply", "next_record", "next_record", "next_record", "next_record", "next_reply"],
        [Ok(), Record(1, b"hello"), Record(2, ALL), Record(3, b"\r\n+EOF\r\n"), Eof(), Pong()],
    ),
    "error_lines_keep_the_stream": (
        b"ERR_CLIENT RANGE start 9 is past the head; valid starts are 1..4 (first=1 head=3)\r\n"
        b"ERR_CLIENT NOTRETAINED start 1 is no longer retained; valid starts are 5..10 (first=5 head=9)\r\n"
        b"ERR_CLIENT REFUSED not the primary (primary=10.0.0.2:1774)\r\n"
        b"ERR_CLIENT UNKNOWN unknown command 'FOO'\r\n"
        b"ERR_CLIENT FORBIDDEN SHUTDOWN is accepted only from loopback\r\n"
        b"ERR DISKFULL no space left on device; nothing written\r\n"
        b"ERR FSYNC fsync failed\r\n"
        b"ERR INTERNAL\r\n"
        b"PONG\r\n",
        ["next_reply"] * 9,
        [
            Raised(OutOfRange, "start 9 is past the head; valid starts are 1..4", (("first", 1), ("head", 3))),
            Raised(NotRetained, "start 1 is no longer retained; valid starts are 5..10", (("first", 5), ("head", 9))),
            Raised(Refused, "not the primary", (("primary", "10.0.0.2:1774"),)),
            Raised(UnknownCommand, "unknown command 'FOO'"),
            Raised(Forbidden, "SHUTDOWN is accepted only from loopback"),
            Raised(DiskFull, "no space left on device; nothing written"),
            Raised(FsyncFailed, "fsync failed"),
            Raised(ServerError, ""),
            Pong(),
        ],
    ),
    "error_instead_of_body": (
        b"ERR_CLIENT BADREQUEST usage: STATS [text|msgpack]\r\nOK 2\r\nhi\r\n",
        ["next_body", "next_body"],
        [Raised(InvalidArgument, "usage: STATS [text|msgpack]"), Body(b"hi")],
    ),
    "stream_ended_by_error": (
        OK + R1 + b"ERR SHUTDOWN server is shutting down\r\n",
        ["next_reply", "next_record", "next_record"],
        [Ok(), Record(1, b"hello"), Raised(ShuttingDown, "server is shutting down")],
    ),
    "read_refused_with_range": (
        b"ERR_CLIENT RANGE start 5 is past the head (first=1 head=3)\r\nPONG\r\n",
        ["next_record", "next_reply"],
        [Raised(OutOfRange, "start 5 is past the head", (("first", 1), ("head", 3))), Pong()],
    ),
    "checksum_mismatch": (
        OK + R1 + BAD_CRC,
        ["next_reply", "next_record", "next_record"],
        [Ok(), Record(1, b"hello"), Raised(ChecksumError, "checksum mismatch for record 1")],
    ),
    "relabelled_record": (
        RELABELLED,
        ["next_record"],
        [Raised(ChecksumError, "checksum mismatch for record 2")],
    ),
    "unexpected_reply": (b"WHAT\r\n", ["next_reply"], [Raised(ProtocolError, "unexpected reply b'WHAT'")]),
    "record_without_crlf": (
        R1[:-2] + b"xx",
        ["next_record"],
        [Raised(ProtocolError, "record 1 body not followed by CRLF")],
    ),
    "record_header_too_long": (
        b"+" + b"1" * 70 + b"\r\n",
        ["next_record"],
        [Raised(ProtocolError, "record header too long")],
    ),
}


@pytest.mark.parametrize("split", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("name", list(REPLY_CASES))
def test_reply_case(name: str, split: Chunker) -> None:
    data, calls, expected = REPLY_CASES[name]
    assert parse_replies(split(data), calls) == expected


def test_checksum_error_is_a_protocol_error() -> None:
    assert issubclass(ChecksumError, ProtocolError)


def _relength(record: bytes, length: bytes) -> list[bytes]:
    """``record`` with its length field replaced, under each crc the format could use."""
    nl = record.index(b"\r\n")
    fields = record[1:nl].split(b" ")
    fields[1] = length
    signed = b" ".join(fields[:-1])
    body = record[nl + 2 : -2]
    out = []
    for covered in (fields[0], signed):  # crc over the id, or over the header text
        fields[-1] = b"%08x" % crc32(body, crc32(covered))
        out.append(b"+" + b" ".join(fields) + b"\r\n" + body + b"\r\n")
    return out


def test_record_with_negative_length_is_rejected() -> None:
    for data in _relength(encode(1, b""), b"-2"):
        parser = ReplyParser()
        parser.receive_data(data)
        with pytest.raises(ProtocolError):
            parser.next_record()


def test_record_parse_rejects_negative_length() -> None:
    from logd.record import RecordError, parse

    for data in _relength(encode(1, b""), b"-2"):
        with pytest.raises(RecordError):
            parse(data)


def test_reply_line_limit_does_not_depend_on_the_split() -> None:
    line = b"ERR INTERNAL " + b"x" * (4096 - 13) + b"\r\n"
    assert len(line) == 4098
    results = {split.__name__: parse_replies(split(line), ["next_reply"]) for split in (whole, bytewise)}
    assert results["whole"] == results["bytewise"]


# -- a client and a server parser joined -------------------------------------------


class ClientServerPair:
    """A client's bytes through ``CommandParser``; canned replies through ``ReplyParser``."""

    def __init__(self) -> None:
        self.server = CommandParser()
        self.client = ReplyParser()

    def send(self, name: str, *args: bytes | str | int) -> object:
        self.server.receive_data(encode_command(name, *args))
        cmd = self.server.next_command()
        assert self.server.next_command() is NEED_DATA
        return cmd

    def reply(self, data: bytes, call: str = "next_reply") -> object:
        self.client.receive_data(data)
        return getattr(self.client, call)()


def test_client_server_pair_round_trips() -> None:
    pair = ClientServerPair()
    bodies = (b"a", ALL, b"\r\n")
    assert pair.send("MSG", *bodies) == Msg(bodies)
    assert pair.reply(encode_ok_id(3)) == OkId(3)
    assert pair.send("READ", 1, 3) == Read(1, 3)
    assert pair.reply(OK) == Ok()
    for i, body in enumerate(bodies, 1):
        assert pair.reply(encode(i, body), "next_record") == Record(i, body)
    assert pair.reply(EOF, "next_record") == Eof()
    assert pair.send("STATS", "msgpack") == Stats("msgpack")
    assert pair.reply(encode_body(b"\x81\xa4head\x03"), "next_body") == Body(b"\x81\xa4head\x03")
    assert pair.send("PING") == Ping()
    assert pair.reply(PONG) == Pong()


# -- errors.from_reply ---------------------------------------------------------------

# Bare ClientError is a base class the server never sends: BADREQUEST decodes
# to its concrete class, InvalidArgument.
WIRE_ERRORS = [
    ProtocolError("command line must be '<CMD> <nargs>'"),
    InvalidArgument("empty message not allowed (argument 2)"),
    UnknownCommand("unknown command 'FOO'"),
    OutOfRange("start 9 is past the head; valid starts are 1..4", first=1, head=3),
    OutOfRange("", first=0, head=0),
    NotRetained("start 1 is no longer retained", first=100, head=2000),
    Refused("this server does not take writes", primary="10.0.0.2:1774"),
    Refused("this server does not take writes"),
    Forbidden("SHUTDOWN is accepted only from 127.0.0.1, ::1 or the unix socket"),
    ServerError("internal error"),
    ServerError(),
    StorageError("write failed: EIO; nothing written"),
    DiskFull("no space left on device; nothing written"),
    FsyncFailed("fsync failed (EIO); writes stopped until restart"),
    CorruptLogError("partition 3 is corrupt at offset 17"),
    ShuttingDown("server is shutting down; not accepting writes"),
    TooManyClients("too many connections (max 10000)"),
]


def _param_id(exc: object) -> str:
    return type(exc).__name__


@pytest.mark.parametrize("exc", WIRE_ERRORS, ids=_param_id)
def test_error_round_trips_through_the_wire(exc: LogdError) -> None:
    line = encode_error(exc)
    assert line.endswith(b"\r\n") and line.count(b"\r\n") == 1
    kind, _, reason = line[:-2].decode().partition(" ")
    assert kind == exc.kind
    back = errors.from_reply(kind, reason)
    assert describe(back) == describe(exc)
    # The same through ReplyParser, split byte by byte.
    assert parse_replies(bytewise(line), ["next_reply"]) == [describe(exc)]


def test_every_wire_error_class_has_its_own_code() -> None:
    for code, cls in errors.CLASSES.items():
        assert cls.code == code
        exc = cls("x")
        assert type(errors.from_reply(cls.kind, exc.reason())) is cls


def test_from_reply_unknown_code_keeps_the_whole_reason() -> None:
    back = errors.from_reply("ERR", "WEIRD something new")
    assert type(back) is ServerError and back.message == "WEIRD something new"
    back = errors.from_reply("ERR_CLIENT", "WEIRD something new")
    assert type(back) is ClientError and back.message == "WEIRD something new"


# -- the examples in the docs ----------------------------------------------------------

DOCS = Path(__file__).parents[2] / "docs" / "protocol.rst"


def _unescape(text: str) -> bytes:
    return text.encode().replace(b"\\r\\n", b"\r\n")


def test_request_example_in_docs_parses() -> None:
    lines = DOCS.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Example: two messages"))
    example = next(line for line in lines[at + 1 :] if line.strip()).strip()
    assert parse_requests(whole(_unescape(example))) == [Msg((b"hello", b"a\r\nb c d"))]


def test_record_example_in_docs_is_what_encode_makes() -> None:
    import re

    import logd.record

    for text in (DOCS.read_text(), logd.record.__doc__ or ""):
        m = re.search(r"Example: ``(\+1 [^`]*)``", text)
        assert m, "no record example"
        assert _unescape(m.group(1).replace("\\\\", "\\")) == encode(1, b"hello")
