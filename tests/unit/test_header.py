"""One header-reader corpus for every path that reads a record header.

Each case is fed to ``record.read_header`` (whole, byte by byte, random
chunks), ``record.pread_header`` and ``partition.id_at`` (from a file),
``record.parse``, ``partition.scan`` and ``partition.walk`` (storage), and
``ReplyParser.next_record`` (the client): all must agree, and bad bytes give
``RecordError`` (storage) or ``ProtocolError`` (client), never a ValueError.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Callable, Iterator
from zlib import crc32

import pytest

from logd import errors, protocol
from logd.log import partition
from logd.record import MAX_HEADER, Header, RecordError, checksum, encode, parse, pread_header, read_header
from tests.chunkers import bytewise, random_chunks

BODY = b"hello"
GOOD = encode(1, BODY)  # b"+1 5 0 10923160\r\nhello\r\n"


def _with_crc(text: bytes, body: bytes = BODY, crc: bytes | None = None) -> bytes:
    """A record with header text ``text`` (``<id> <len> <more>``) and, unless
    given, the crc that text and body really have: only the header's form is wrong."""
    if crc is None:
        crc = b"%08x" % crc32(body, crc32(text))
    return b"+%s %s\r\n%s\r\n" % (text, crc, body)


def _body_whose_crc(want: Callable[[bytes], bool]) -> tuple[bytes, bytes]:
    for n in range(100000):
        body = b"%d" % n
        crc = b"%08x" % checksum(1, body)
        if want(crc):
            return body, crc
    raise AssertionError("no such body")


_LETTERS, _LETTERS_CRC = _body_whose_crc(lambda c: c.strip(b"0123456789") != b"")
_ZERO, _ZERO_CRC = _body_whose_crc(lambda c: c.startswith(b"0"))


VALID = {
    "smallest": (GOOD, Header(1, 5, 0, checksum(1, BODY), 17)),
    "more": (encode(7, BODY, 3), Header(7, 5, 3, checksum(7, BODY, 3), 17)),
    "empty body": (encode(2, b""), Header(2, 0, 0, checksum(2, b""), 17)),
    "19-digit id": (encode(10**18 * 9, b"x"), Header(10**18 * 9, 1, 0, checksum(10**18 * 9, b"x"), 35)),
    "crc with letters": (encode(3, b"abc"), Header(3, 3, 0, checksum(3, b"abc"), 17)),
}

# name -> record bytes whose header is bad
MALFORMED = {
    "id 0": _with_crc(b"0 5 0"),
    "negative id": _with_crc(b"-1 5 0"),
    "negative more": _with_crc(b"1 5 -1"),
    "negative len": _with_crc(b"1 -5 0"),
    "leading zero id": _with_crc(b"01 5 0"),
    "leading zero len": _with_crc(b"1 05 0"),
    "leading zero more": _with_crc(b"1 5 00"),
    "plus sign": _with_crc(b"+1 5 0"),
    "hex id": _with_crc(b"0x1 5 0"),
    "underscore": _with_crc(b"1_0 5 0"),
    "20-digit id": _with_crc(b"1" * 20 + b" 5 0"),
    "20-digit len": _with_crc(b"1 " + b"1" * 20 + b" 0"),
    "non-ascii digit": _with_crc("1 ٥ 0".encode()),
    "crc of 7 digits": _with_crc(b"1 5 0", crc=b"0923160"),
    "crc of 9 digits": _with_crc(b"1 5 0", crc=b"010923160"),
    "uppercase crc": _with_crc(b"1 %d 0" % len(_LETTERS), _LETTERS, _LETTERS_CRC.upper()),
    "crc with sign": _with_crc(b"1 %d 0" % len(_ZERO), _ZERO, b"+" + _ZERO_CRC[1:]),
    "crc with space": _with_crc(b"1 %d 0" % len(_ZERO), _ZERO, b" " + _ZERO_CRC[1:]),
    "crc not hex": b"+1 5 0 1092316g\r\nhello\r\n",
    "three fields": b"+1 5 10923160\r\nhello\r\n",
    "five fields": b"+1 5 0 0 10923160\r\nhello\r\n",
    "double space": b"+1  5 0 10923160\r\nhello\r\n",
    "trailing space": b"+1 5 0 10923160 \r\nhello\r\n",
    "tab": b"+1\t5 0 10923160\r\nhello\r\n",
    "bare LF": b"+1 5 0 10923160\nhello\r\n\r\n",
    "EOF marker": b"+EOF\r\n",
}
NOT_A_RECORD = {"no plus": b"-1 5 0 10923160\r\nhello\r\n"}
TOO_LONG = {
    "no CRLF in MAX_HEADER": b"+" + b"1" * (MAX_HEADER + 10),
    "long but valid fields": b"+%d %d %d 00000000\r\n" % (10**18, 10**18, 10**18),
}


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    yield [data]
    yield list(bytewise(data))
    rng = random.Random(len(data))
    for _ in range(5):
        yield list(random_chunks(data, rng, largest=9))


def fed(data: bytes) -> Iterator[Header]:
    """read_header over ``data`` arriving in every chunking; yields the final header."""
    for parts in chunkings(data):
        buf = bytearray()
        got = None
        for part in parts:
            assert got is None, "a header before its CRLF arrived"
            buf += part
            got = read_header(buf)
        assert got is not None
        yield got


@pytest.mark.parametrize("name", list(VALID))
def test_valid_header_in_any_chunking(name: str) -> None:
    data, want = VALID[name]
    for got in fed(data[: want.length]):
        assert got == want
    assert read_header(data) == want
    assert read_header(b"xx" + data, 2) == want
    assert want.record_size == len(data)
    assert want.matches(data[want.length : want.length + want.size])
    assert not want.matches(data[want.length : want.length + want.size] + b"!")


@pytest.mark.parametrize("name", list(MALFORMED) + list(NOT_A_RECORD) + list(TOO_LONG))
def test_bad_header_raises_record_error_in_any_chunking(name: str) -> None:
    data = {**MALFORMED, **NOT_A_RECORD, **TOO_LONG}[name]
    reason = ("record does not start with '+'" if name in NOT_A_RECORD else
              "record header too long" if name in TOO_LONG else "malformed record header")
    for parts in chunkings(data):
        buf = bytearray()
        with pytest.raises(RecordError) as info:
            for part in parts:
                buf += part
                assert read_header(buf) is None
        assert info.value.reason == reason and info.value.offset == 0
        assert not isinstance(info.value, ValueError)
    with pytest.raises(RecordError):
        parse(data)


def test_incomplete_header_needs_more() -> None:
    for n in range(len(GOOD.split(b"\n")[0])):
        assert read_header(GOOD[:n]) is None
    assert read_header(b"") is None and read_header(GOOD, len(GOOD)) is None


@pytest.fixture
def fd_of():
    paths = []
    fds = []

    def make(data: bytes) -> int:
        f, path = tempfile.mkstemp()
        os.write(f, data)
        paths.append(path)
        fds.append(f)
        return f

    yield make
    for f in fds:
        os.close(f)
    for path in paths:
        os.unlink(path)


@pytest.mark.parametrize("name", list(VALID) + list(MALFORMED) + list(NOT_A_RECORD) + list(TOO_LONG))
def test_file_readers_agree_with_the_buffer_reader(name: str, fd_of) -> None:
    data = {**{k: v[0] for k, v in VALID.items()}, **MALFORMED, **NOT_A_RECORD, **TOO_LONG}[name]
    fd = fd_of(b"\0" * 3 + data)
    if name in VALID:
        want = VALID[name][1]
        assert pread_header(fd, 3) == want
        assert partition.id_at(fd, 3) == want.id
        assert partition.walk(fd, 3, want.id, want.id + 1, 3 + len(data)) == (3 + len(data), want.id + 1)
        result = partition.scan(fd, 3, 3 + len(data), want.id)
        assert result.error is None and result.last_id == want.id
        return
    with pytest.raises(RecordError) as info:
        pread_header(fd, 3)
    assert info.value.offset == 3
    assert partition.id_at(fd, 3) is None
    with pytest.raises(RecordError):
        partition.walk(fd, 3, 1, 2, 3 + len(data))
    result = partition.scan(fd, 3, 3 + len(data), 1)
    assert result.error is not None and result.error.offset == 3 and result.last_id == 0


def test_pread_header_at_end_of_file(fd_of) -> None:
    fd = fd_of(GOOD + GOOD[:10])
    assert pread_header(fd, len(GOOD)) is None
    assert pread_header(fd, len(GOOD) + 10) is None
    assert partition.id_at(fd, len(GOOD)) is None


def test_walk_steps_over_records_and_checks_ids(fd_of) -> None:
    bodies = [b"x" * n for n in range(1, 3000, 7)]  # ~1.3 MB: several 64 KiB blocks
    data = b"".join(encode(i, b) for i, b in enumerate(bodies, 1))
    fd = fd_of(data)
    offsets = [0]
    for i, b in enumerate(bodies, 1):
        offsets.append(offsets[-1] + len(encode(i, b)))
    for target in (1, 2, 200, len(bodies), len(bodies) + 1):
        assert partition.walk(fd, 0, 1, target, len(data)) == (offsets[target - 1], target)
    assert partition.walk(fd, offsets[10], 11, 400, len(data)) == (offsets[399], 400)
    # stops at end even short of target
    assert partition.walk(fd, 0, 1, 10**6, offsets[5]) == (offsets[5], 6)
    with pytest.raises(RecordError) as info:
        partition.walk(fd, offsets[10], 12, 20, len(data))  # the index says 12, the file 11
    assert info.value.offset == offsets[10] and "expected id 12" in info.value.reason


def _reply(parts: list[bytes]) -> object:
    rp = protocol.ReplyParser(max_body=1 << 20)
    for part in parts:
        rp.receive_data(part)
        got = rp.next_record()
        if got is not protocol.NEED_DATA:
            return got
    return protocol.NEED_DATA


@pytest.mark.parametrize("name", list(VALID) + list(MALFORMED) + list(TOO_LONG))
def test_reply_parser_uses_the_same_reader(name: str) -> None:
    data = {**{k: v[0] for k, v in VALID.items()}, **MALFORMED, **TOO_LONG}[name]
    for parts in chunkings(data):
        if name == "EOF marker":
            assert isinstance(_reply(parts), protocol.Eof)
        elif name in VALID:
            rec = _reply(parts)
            want = VALID[name][1]
            assert (rec.id, rec.more, len(rec.body)) == (want.id, want.more, want.size)
        else:
            with pytest.raises(errors.ProtocolError) as info:
                _reply(parts)
            assert type(info.value) is errors.ProtocolError
            assert "record header" in str(info.value)


def test_record_error_is_not_a_value_error() -> None:
    assert not issubclass(RecordError, ValueError)
    assert not issubclass(RecordError, IndexError)
