"""``ReplyParser`` against a server that cannot be trusted (issue 7, item 9).

Every reply below is fed whole, one byte at a time and in random chunks. A
malformed or oversized reply must raise a typed ``LogdError`` (never a bare
``ValueError`` or another foreign exception) as soon as the bytes show it,
and nothing may be buffered without bound while the parser waits. Error
lines inside a READ stream decode to their class whatever their length.
"""

from __future__ import annotations

import random
from typing import Iterator
from zlib import crc32

import pytest

from logd import errors, protocol, record
from logd.errors import LogdError, ProtocolError
from logd.protocol import NEED_DATA, Body, Eof, Ok, OkId, Pong, ReplyParser
from logd.record import Record, encode
from tests.chunkers import Chunker, bytewise, seeded, whole

CHUNKERS = [whole, bytewise, seeded(11, largest=300)]


def feed(data: bytes, calls: list[str], chunker: Chunker, parser: ReplyParser | None = None) -> list[object]:
    """Run ``calls`` in order over ``data``; return the results, ending with any LogdError raised."""
    parser = parser or ReplyParser()
    out: list[object] = []
    pending = list(calls)
    for chunk in chunker(data):
        parser.receive_data(chunk)
        while pending:
            try:
                got = getattr(parser, pending[0])()
            except LogdError as exc:
                out.append(exc)
                return out
            if got is NEED_DATA:
                break
            out.append(got)
            pending.pop(0)
    return out


# -- unbounded buffering -----------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize(
    "data, call",
    [
        (b"OK 5" + b"x" * 20_000, "next_body"),  # a STATS body line with no CRLF
        (b"\x00" * 20_000, "next_body"),
        (b"OK" + b"K" * 20_000, "next_reply"),
        (b"ERR_CLIENT NOTRETAINED " + b"y" * 20_000, "next_record"),
        (b"+" + b"1" * 20_000, "next_record"),
    ],
    ids=["stats_no_crlf", "body_garbage", "reply_no_crlf", "error_line_no_crlf", "header_no_crlf"],
)
def test_a_reply_without_crlf_is_bounded(data: bytes, call: str, chunker: Chunker) -> None:
    parser = ReplyParser()
    limit = parser.max_line + 2
    with pytest.raises(ProtocolError):
        for chunk in chunker(data):
            before = parser.buffered
            parser.receive_data(chunk)
            assert before <= limit  # it raised as soon as the limit was passed
            assert getattr(parser, call)() is NEED_DATA


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("call", ["next_reply", "next_body", "next_record"])
def test_a_line_longer_than_the_limit_is_refused_even_with_its_crlf(call: str, chunker: Chunker) -> None:
    # Whole, the CRLF is in the buffer; the limit must not depend on the split.
    line = b"ERR INTERNAL " + b"x" * 10_000 + b"\r\n"
    got = feed(line, [call], chunker)
    assert len(got) == 1 and type(got[0]) is ProtocolError
    assert "longer than 4096" in got[0].message


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_the_line_limit_is_a_parameter(chunker: Chunker) -> None:
    line = b"ERR INTERNAL " + b"x" * 100 + b"\r\n"
    got = feed(line, ["next_reply"], chunker, ReplyParser(max_line=64))
    assert type(got[0]) is ProtocolError
    got = feed(line, ["next_reply"], chunker, ReplyParser(max_line=113))
    assert type(got[0]) is errors.ServerError  # exactly at the limit: accepted


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize(
    "data, call",
    [
        (b"OK 1025\r\n" + b"z" * 1025 + b"\r\n", "next_body"),
        (encode(1, b"z" * 1025), "next_record"),
        (b"OK 99999999999999999999999\r\n", "next_body"),  # 23 digits
    ],
    ids=["body", "record", "huge_length"],
)
def test_a_length_above_the_limit_is_refused_before_the_body(data: bytes, call: str, chunker: Chunker) -> None:
    parser = ReplyParser(max_body=1024)
    got = feed(data, [call], chunker, parser)
    assert type(got[-1]) is ProtocolError
    assert "exceeds the limit of 1024" in got[-1].message or b"9" * 20 in data
    if chunker is bytewise:
        assert parser.buffered < 40  # raised at the header, not after the body


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_an_id_of_thousands_of_digits_is_a_protocol_error(chunker: Chunker) -> None:
    # int() of more than 4300 digits raises ValueError; such a line is refused first.
    for digits in (20, 4090):
        got = feed(b"OK " + b"9" * digits + b"\r\n", ["next_reply"], chunker)
        assert type(got[0]) is ProtocolError, digits
    got = feed(b"OK " + b"9" * 5000 + b"\r\n", ["next_reply"], chunker)
    assert type(got[0]) is ProtocolError


# -- error replies with malformed fields ------------------------------------------------------

MALFORMED_FIELDS = [
    b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=x head=9)",
    b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=1.5 head=9)",
    b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=-1 head=9)",
    b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=5 head=)",
    b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=5)",
    b"ERR_CLIENT NOTRETAINED id 3 was deleted",
    b"ERR_CLIENT RANGE start 9 is past the head (first=1 head=1e3)",
    b"ERR_CLIENT RANGE start 9 is past the head (first=" + b"9" * 5000 + b" head=3)",
    "ERR_CLIENT RANGE past the head (first=\u0663 head=3)".encode(),  # an Arabic-Indic 3
    b"ERR_CLIENT RANGE",
]


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("line", MALFORMED_FIELDS, ids=range(len(MALFORMED_FIELDS)))
@pytest.mark.parametrize("call", ["next_reply", "next_body", "next_record"])
def test_malformed_error_fields_are_a_protocol_error(line: bytes, call: str, chunker: Chunker) -> None:
    got = feed(line + b"\r\n", [call], chunker, ReplyParser(max_line=8192))
    assert len(got) == 1 and type(got[0]) is ProtocolError, got
    assert "malformed" in got[0].message


def test_malformed_fields_name_the_field() -> None:
    exc = errors.from_reply("ERR_CLIENT", "NOTRETAINED id 3 was deleted (first=x head=9)")
    assert isinstance(exc, ProtocolError) and "first='x'" in exc.message
    exc = errors.from_reply("ERR_CLIENT", "NOTRETAINED id 3 was deleted")
    assert isinstance(exc, ProtocolError) and "no first=" in exc.message and "no head=" in exc.message


# -- error lines inside a READ stream ----------------------------------------------------------

LONG_CORRUPT = (
    b"ERR CORRUPT record 1234567 in partition 00000000000001234567.log at offset 987654321"
    b" fails its checksum"
)
LONG_NOTRETAINED = (
    b"ERR_CLIENT NOTRETAINED records from 1234567 were deleted by retention"
    b" (first=2345678 head=9999999)"
)


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_a_long_corrupt_line_in_a_stream_is_corrupt_log_error(chunker: Chunker) -> None:
    assert len(LONG_CORRUPT) > record.MAX_HEADER
    data = protocol.OK + encode(1, b"a") + LONG_CORRUPT + b"\r\n"
    got = feed(data, ["next_reply", "next_record", "next_record"], chunker)
    assert got[:2] == [Ok(), Record(1, b"a")]
    assert type(got[2]) is errors.CorruptLogError
    assert got[2].message.startswith("record 1234567 in partition")


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_a_long_notretained_line_in_a_stream_is_not_retained(chunker: Chunker) -> None:
    assert len(LONG_NOTRETAINED) > record.MAX_HEADER
    data = protocol.OK + encode(1, b"a") + LONG_NOTRETAINED + b"\r\n"
    got = feed(data, ["next_reply", "next_record", "next_record"], chunker)
    exc = got[2]
    assert type(exc) is errors.NotRetained
    assert (exc.first, exc.head) == (2345678, 9999999)


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_a_long_line_that_is_not_an_error_is_a_protocol_error(chunker: Chunker) -> None:
    got = feed(b"HELLO " + b"w" * 200 + b"\r\n", ["next_record"], chunker)
    assert type(got[0]) is ProtocolError and "expected a record" in got[0].message


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_a_stream_still_parses_after_the_change(chunker: Chunker) -> None:
    bodies = [b"x", b"ERR CORRUPT not really\r\n", b"+EOF\r\n", bytes(range(256)) * 3]
    data = b"".join(encode(i, b) for i, b in enumerate(bodies, 1)) + protocol.EOF + protocol.PONG
    got = feed(data, ["next_record"] * 5 + ["next_reply"], chunker)
    assert got == [Record(i, b) for i, b in enumerate(bodies, 1)] + [Eof(), Pong()]


# -- record headers: the format, not whatever int() accepts ---------------------------------------


def _header(fields: list[bytes], body: bytes) -> bytes:
    return b"+" + b" ".join(fields) + b"\r\n" + body + b"\r\n"


def _crc(id: bytes, body: bytes) -> int:
    return crc32(body, crc32(b"%s %d 0" % (id, len(body))))


BAD_HEADERS = [
    _header([b"0", b"1", b"0", b"%08x" % _crc(b"0", b"a")], b"a"),  # id 0
    _header([b"1", b"1", b"0", b"0x%06x" % (_crc(b"1", b"a") & 0xFFFFFF)], b"a"),  # 0x prefix
    _header([b"1", b"1", b"0", b"%09x" % _crc(b"1", b"a")], b"a"),  # 9 hex digits
    _header([b"1", b"1", b"0", b"%08X" % _crc(b"1", b"a")], b"a"),  # upper case
    _header([b"1", b"1", b"0"], b"a"),  # no crc
    _header([b"1", b"1", b"0", b"00000000", b"x"], b"a"),  # a field too many
    _header([b"1", b"-1", b"0", b"00000000"], b"a"),
]


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize("data", BAD_HEADERS, ids=range(len(BAD_HEADERS)))
def test_malformed_record_headers(data: bytes, chunker: Chunker) -> None:
    got = feed(data, ["next_record"], chunker)
    assert len(got) == 1 and isinstance(got[0], ProtocolError), got


def test_record_header_limit_matches_the_record_format() -> None:
    assert protocol.MAX_RECORD_HEADER == record.MAX_HEADER


# -- nothing but LogdError, whatever the bytes --------------------------------------------------


def _mutations(rng: random.Random, base: bytes, n: int) -> Iterator[bytes]:
    for _ in range(n):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            at = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif op == 1:
                data[at:at] = rng.choice([b"\r\n", b" ", b"=", b"x", b"1.5", b"-", b"9" * 30, b"("])
            elif op == 2:
                del data[at : at + rng.randint(1, 8)]
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        yield bytes(data)


VALID = (
    b"OK\r\nOK 7\r\nPONG\r\n"
    + protocol.encode_body(b"head: 3\r\n")
    + b"ERR_CLIENT NOTRETAINED start 1 is gone (first=5 head=9)\r\n"
    + b"ERR_CLIENT REFUSED not the primary (primary=10.0.0.2:1774)\r\n"
    + encode(1, b"hello")
    + LONG_CORRUPT
    + b"\r\n"
    + protocol.EOF
)


@pytest.mark.parametrize("call", ["next_reply", "next_body", "next_record"])
def test_random_damage_raises_only_logd_errors(call: str) -> None:
    rng = random.Random(crc32(call.encode()))
    for data in _mutations(rng, VALID, 400):
        chunker = rng.choice(CHUNKERS)
        parser = ReplyParser(max_body=4096, max_line=256)
        try:
            for chunk in chunker(data):
                parser.receive_data(chunk)
                for _ in range(20):  # bounded: at most a few items per chunk
                    try:
                        got = getattr(parser, call)()
                    except LogdError as exc:
                        if isinstance(exc, ProtocolError):
                            raise
                        continue  # an error reply: the stream goes on
                    if got is NEED_DATA:
                        break
                    assert isinstance(got, (Ok, OkId, Pong, Body, Eof, Record))
                assert parser.buffered <= 4096 + 256 + 300
        except ProtocolError:
            pass
