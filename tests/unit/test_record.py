"""The record format (logd/record.py): the same bytes on disk and on the wire.

The tests go through ``encode``/``parse`` and treat the header as text fields
(``+<id> <len> ... <crc>``), so they hold whatever fields sit between the
length and the crc.
"""

from __future__ import annotations

import random

import pytest

from logd.record import MAX_HEADER, Record, RecordError, checksum, encode, encode_batch, iter_records, parse

ALL = bytes(range(256))
BODIES = [
    b"",
    b"x",
    b"\x00",
    b"\r\n",
    b"\r\n\r\n",
    b"a\r\nb c d",
    b"+1 5 0 00000000\r\nhello\r\n",  # looks like a record
    b"+EOF\r\n",
    ALL,
    ALL[::-1] * 3,
    bytes(random.Random(5).randrange(256) for _ in range(70_000)),
]
IDS = [1, 2, 9, 10, 99, 12345, 2**63 - 1]


def header_fields(record: bytes) -> list[bytes]:
    return record[1 : record.index(b"\r\n")].split(b" ")


def with_fields(record: bytes, fields: list[bytes]) -> bytes:
    return b"+" + b" ".join(fields) + record[record.index(b"\r\n") :]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: f"{len(b)}B")
@pytest.mark.parametrize("id", IDS)
def test_round_trip(id: int, body: bytes) -> None:
    data = encode(id, body)
    assert data.startswith(b"+%d %d " % (id, len(body)))
    assert data.endswith(b"\r\n" + body + b"\r\n") if body else data.endswith(b"\r\n\r\n")
    assert data.index(b"\r\n") < MAX_HEADER
    got = parse(data)
    assert got is not None
    rec, end = got
    assert (rec.id, rec.body) == (id, body)
    assert end == len(data)
    assert header_fields(data)[-1] == b"%08x" % checksum(id, body)


def test_parse_at_an_offset() -> None:
    data = b"junk" + encode(3, b"abc") + encode(4, b"de")
    rec, end = parse(data, 4)  # type: ignore[misc]
    assert (rec.id, rec.body) == (3, b"abc")
    rec, end2 = parse(data, end)  # type: ignore[misc]
    assert (rec.id, rec.body) == (4, b"de") and end2 == len(data)
    assert parse(data, len(data)) is None


def test_parse_accepts_memoryview_and_bytearray() -> None:
    data = encode(7, b"hello")
    for buf in (bytearray(data), memoryview(data)):
        rec, end = parse(buf)  # type: ignore[misc]
        assert (rec.id, rec.body, end) == (7, b"hello", len(data))


def test_encode_batch_is_consecutive_records() -> None:
    bodies = [b"a", b"", ALL, b"\r\n"]
    data, sizes = encode_batch(41, bodies)
    assert sum(sizes) == len(data)
    got = list(iter_records(data))
    assert [(r.id, r.body) for _, r in got] == [(41 + i, b) for i, b in enumerate(bodies)]
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    assert [off for off, _ in got] == offsets
    # A one-message batch is exactly encode().
    assert encode_batch(5, [b"hello"]) == (encode(5, b"hello"), [len(encode(5, b"hello"))])


def test_checksum_covers_the_id() -> None:
    data = encode(1, b"hello")
    fields = header_fields(data)
    for other in (b"2", b"11", b"10"):
        relabelled = with_fields(data, [other, *fields[1:]])
        with pytest.raises(RecordError) as info:
            parse(relabelled)
        assert "checksum" in info.value.reason and not info.value.torn
    assert checksum(1, b"hello") != checksum(2, b"hello")


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda d, f: b"-" + d[1:], id="no-plus"),
        pytest.param(lambda d, f: b"x" + d, id="leading-junk"),
        pytest.param(lambda d, f: with_fields(d, [b"x", *f[1:]]), id="id-not-digits"),
        pytest.param(lambda d, f: with_fields(d, [b"-1", *f[1:]]), id="id-negative"),
        pytest.param(lambda d, f: with_fields(d, [b"0", *f[1:]]), id="id-zero"),
        pytest.param(lambda d, f: with_fields(d, [f[0], b"5x", *f[2:]]), id="len-not-digits"),
        pytest.param(lambda d, f: with_fields(d, [*f[:-1], b"zzzzzzzz"]), id="crc-not-hex"),
        pytest.param(lambda d, f: with_fields(d, [*f[:-1], f[-1][:7]]), id="crc-7-digits"),
        pytest.param(lambda d, f: with_fields(d, [*f[:-1], b"0" + f[-1]]), id="crc-9-digits"),
        pytest.param(lambda d, f: with_fields(d, f[:-1]), id="field-missing"),
        pytest.param(lambda d, f: with_fields(d, [*f, b"0"]), id="field-extra"),
        pytest.param(lambda d, f: d.replace(b" ", b"  ", 1), id="double-space"),
        pytest.param(lambda d, f: b"+" + b"1" * MAX_HEADER + b"\r\n", id="header-too-long"),
        pytest.param(lambda d, f: d[:-2] + b"xx", id="terminator-xx"),
        pytest.param(lambda d, f: d[:-2] + b"\r\r", id="terminator-crcr"),
        pytest.param(lambda d, f: d[:-2] + b"\n\n", id="terminator-lflf"),
        pytest.param(lambda d, f: d[:-1] + b"\r", id="terminator-lf-missing"),
    ],
)
def test_corrupt_record_is_an_error_not_torn(mangle) -> None:  # type: ignore[no-untyped-def]
    data = encode(12, b"hello")
    bad = mangle(data, header_fields(data))
    with pytest.raises(RecordError) as info:
        parse(bad)
    assert not info.value.torn and info.value.offset == 0
    with pytest.raises(RecordError) as info:
        list(iter_records(encode(11, b"ok") + bad))
    assert not info.value.torn and info.value.offset == len(encode(11, b"ok"))


@pytest.mark.parametrize("body", [b"hello", ALL, b"\r\n\r\n"], ids=["hello", "all", "crlf"])
def test_every_body_byte_is_checked(body: bytes) -> None:
    data = encode(3, body)
    start = data.index(b"\r\n") + 2
    for i in range(start, start + len(body)):
        for flip in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= flip
            with pytest.raises(RecordError) as info:
                parse(bytes(bad))
            assert "checksum" in info.value.reason


def test_no_header_byte_flip_yields_a_record() -> None:
    data = encode(123, b"hello world")
    nl = data.index(b"\r\n")
    for i in range(nl + 2):
        for flip in (0x01, 0x02, 0x80):
            bad = bytearray(data)
            bad[i] ^= flip
            try:
                got = parse(bytes(bad))
            except RecordError as exc:
                assert not exc.torn or exc.reason == "incomplete record"
                continue
            assert got is None, f"flip {flip:#x} at {i} parsed as {got}"


def test_every_prefix_is_torn() -> None:
    first = encode(1, b"first")
    for body in (b"hello", ALL, b"\r\n"):
        data = encode(2, body)
        for k in range(len(data)):
            assert parse(data[:k]) is None, k
            assert parse(first + data[:k], len(first)) is None
            it = iter_records(first + data[:k])
            assert next(it)[1] == Record(1, b"first")
            if k == 0:
                assert list(it) == []
                continue
            with pytest.raises(RecordError) as info:
                next(it)
            assert info.value.torn and info.value.offset == len(first)


def test_iter_records_offsets() -> None:
    recs = [encode(i, b"x" * i) for i in range(1, 30)]
    data = b"".join(recs)
    offsets = [sum(map(len, recs[:i])) for i in range(len(recs))]
    assert [(off, r.id, r.body) for off, r in iter_records(data)] == [
        (off, i, b"x" * i) for off, i in zip(offsets, range(1, 30))
    ]
    assert list(iter_records(data, offsets[5]))[0][1].id == 6
    assert list(iter_records(b"")) == []


@pytest.mark.parametrize("seed", [0, 1, 2, "bytewise"])
def test_parse_fed_in_chunks(seed: object) -> None:
    rng = random.Random(0)
    bodies = [bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 2, 50, 300)))) for _ in range(200)]
    data = b"".join(encode(i, b) for i, b in enumerate(bodies, 1))
    split = random.Random(seed if isinstance(seed, int) else 0)
    buf = bytearray()
    pos = 0
    got = []
    i = 0
    while i < len(data):
        n = 1 if seed == "bytewise" else split.randint(1, 700)
        buf += data[i : i + n]
        i += n
        while (res := parse(buf, pos)) is not None:
            got.append(res[0])
            pos = res[1]
    assert pos == len(data)
    assert [(r.id, r.body) for r in got] == list(enumerate(bodies, 1))
