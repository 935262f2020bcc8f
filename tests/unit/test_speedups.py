"""The native fast path (logd/_speedups.c) against its pure-Python reference.

One corpus runs against both implementations of ``scan_records`` (valid
logs, torn tails, bad CRCs, id gaps, broken MSGs, every malformed header of
test_header.py), whole, byte by byte and in random chunks, and the results
must be identical; so must ``encode_batch``'s bytes, the Replicator's
writes and errors, partition.scan's results on damaged files, the client's
run reader's runs (``read_records``) and the client's record reader's
records and errors (ReplyParser.next_record and next_records, against
next_record's judging code alone). The command parser's corpus runs against
both in test_protocol.py.

``test_native_is_built`` fails when a normal ``pip install -e`` did not build
the extension (so CI exercises it); LOGD_ALLOW_PURE=1 allows its absence.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

import follower.replicator as replicator_mod
from follower.replicator import BadStream, Replicator, Write
from logd import errors, record, speedups
from logd.protocol import NEED_DATA, Eof, ReplyParser, replies
from logd.log import partition
from logd.protocol.replication import Data
from logd.record import Scan, encode, encode_batch_pure, scan_records_pure
from tests.chunkers import bytewise, random_chunks, seeded
from tests.unit.test_header import MALFORMED, NOT_A_RECORD, TOO_LONG, VALID

native = speedups.native
NATIVE_MISSING = "logd._speedups is not built (no compiler or Python headers at install, or LOGD_PURE=1)"

ScanFn = Callable[..., Scan]


def _native_scan(buf: bytes | bytearray | memoryview, pos: int, next_id: int, more: int = 0,
                 crc: int = 0, sizes: list[int] | None = None, points: list[int] | None = None,
                 base: int = 0, due: int = 0, interval: int = 0) -> Scan:
    assert native is not None
    return Scan._make(native.scan(buf, pos, next_id, more, crc, sizes, points, base, due, interval))


@pytest.fixture(params=["pure", "native"])
def impl(request: pytest.FixtureRequest) -> str:
    if request.param == "native" and native is None:
        pytest.skip(NATIVE_MISSING)
    return str(request.param)


def scan_fn(impl: str) -> ScanFn:
    return scan_records_pure if impl == "pure" else _native_scan


def test_native_is_built() -> None:
    if os.environ.get("LOGD_ALLOW_PURE") == "1" or os.environ.get("LOGD_PURE") not in (None, "", "0"):
        pytest.skip("LOGD_ALLOW_PURE=1 / LOGD_PURE=1: the pure-Python path is allowed")
    assert native is not None, "pip install -e . should have built logd._speedups (gcc, python3-dev)"
    assert speedups.IMPLEMENTATION == "native"
    assert record.scan_records is not scan_records_pure
    assert record.encode_batch is native.encode_batch


def test_logd_pure_forces_python() -> None:
    code = ("import logd.speedups as s, logd.record as r; "
            "print(s.IMPLEMENTATION, r.scan_records is r.scan_records_pure, r.encode_batch is r.encode_batch_pure)")
    env = dict(os.environ, LOGD_PURE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["pure", "True", "True"], out.stderr


# -- the scanner corpus ------------------------------------------------------------------------

def _log(first: int, msgs: list[list[bytes]]) -> bytes:
    out = []
    for bodies in msgs:
        out.append(encode_batch_pure(first, bodies)[0])
        first += len(bodies)
    return b"".join(out)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def _corpus() -> dict[str, tuple[bytes, int]]:
    rng = random.Random(12)
    msgs = [[bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 5, 100, 300))))
             for _ in range(rng.randint(1, 5))] for _ in range(30)]
    msgs[3][0] = b"a\r\nb\r\n"  # CRLF inside a body
    valid = _log(1, msgs)
    three = _log(1, [[b"a", b"bb", b"ccc"], [b"dddd"], [b"e", b"f"]])
    second = len(encode(1, b"a", 2))
    cases: dict[str, tuple[bytes, int]] = {
        "empty": (b"", 1),
        "one record": (encode(1, b"hello"), 1),
        "valid log": (valid, 1),
        "valid log from id 1000": (_log(1000, msgs[:5]), 1000),
        "big body": (encode(5, os.urandom(200_000)) + encode(6, b"x"), 5),
        "19-digit ids": (_log(9 * 10**18, [[b"x", b"y"]]), 9 * 10**18),
        "last MSG incomplete": (_log(1, [[b"a"]]) + encode(2, b"b", 2) + encode(3, b"c", 1), 1),
        "bad crc in a body": (_flip(three, second + 13), 1),
        "bad crc digit": (three[:second + 10] + (b"0" if three[second + 10:second + 11] != b"0" else b"1")
                          + three[second + 11:], 1),
        "id gap": (encode(1, b"a") + encode(2, b"b") + encode(4, b"d") + encode(5, b"e"), 1),
        "id repeated": (encode(1, b"a") + encode(1, b"a"), 1),
        "wrong first id": (three, 2),
        "MSG cut short by a new MSG": (encode(1, b"a", 2) + encode(2, b"b", 1) + encode(3, b"c", 0)
                                       + encode(4, b"d", 1) + encode(5, b"e", 3), 1),
        "MSG count skips": (encode(1, b"a", 2) + encode(2, b"b", 0), 1),
        "MSG count grows": (encode(1, b"a", 1) + encode(2, b"b", 1), 1),
        "body without CRLF": (encode(1, b"a") + b"+2 1 0 %08x\r\nb\n\n" % record.checksum(2, b"b"), 1),
        "body longer than said": (encode(1, b"a") + b"+2 1 0 %08x\r\nbb\r\n" % record.checksum(2, b"b"), 1),
        "garbage after records": (three + b"garbage\r\n", 1),
        "a reply line after records": (three + b"+EOF\r\n", 1),
        "header without CRLF yet": (three + b"+7 1 0 0000", 1),
        "header too long": (three + b"+" + b"1" * 80, 1),
        "zero bytes": (three + b"\x00" * 100, 1),
    }
    for name, data in MALFORMED.items():
        cases["malformed: " + name] = (encode(1, b"a") + data + encode(3, b"c"), 1)
    for name, data in {**NOT_A_RECORD, **TOO_LONG}.items():
        cases["bad: " + name] = (encode(1, b"a") + data, 1)
    for name, (data, h) in VALID.items():
        cases["valid header: " + name] = (data, h.id)
    for n in range(len(three)):
        cases[f"torn at {n}"] = (three[:n], 1)
    for n in range(0, len(three), 3):
        cases[f"flipped byte {n}"] = (_flip(three, n), 1)
    return cases


CORPUS = _corpus()


def _streamed(fn: ScanFn, parts: Iterator[bytes], first_id: int) -> tuple[Scan, list[int]]:
    """Scan as the follower does: bytes arrive in parts; each call goes on
    from where the last one stopped (inside a MSG or a record too)."""
    buf = bytearray()
    pos, next_id, more = 0, first_id, 0
    batch = (0, first_id - 1, 0)
    sizes: list[int] = []
    got = Scan(0, first_id, 0, 0, first_id - 1, 0, None)
    for part in parts:
        buf += part
        got = fn(buf, pos, next_id, more, batch[2], sizes)
        if got.batch_end != pos:
            batch = (got.batch_end, got.batch_id, got.batch_crc)
        pos, next_id, more = got.end, got.next_id, got.more
        if got.error is not None:
            break
    return Scan(pos, next_id, more, batch[0], batch[1], batch[2], got.error), sizes


def _whole(fn: ScanFn, data: bytes, first_id: int) -> tuple[Scan, list[int]]:
    sizes: list[int] = []
    return fn(data, 0, first_id, 0, 0, sizes), sizes


@pytest.mark.parametrize("name", list(CORPUS))
def test_scan_corpus_whole_and_in_chunks(name: str, impl: str) -> None:
    data, first_id = CORPUS[name]
    fn = scan_fn(impl)
    want = _whole(scan_records_pure, data, first_id)
    assert _whole(fn, data, first_id) == want
    assert fn(memoryview(data), 0, first_id) == scan_records_pure(data, 0, first_id)
    chunkings = [bytewise(data), random_chunks(data, 7, 9), seeded(3)(data)]
    if len(data) > 20_000:
        chunkings = [random_chunks(data, 7, 4096)]
    for parts in chunkings:
        assert _streamed(fn, parts, first_id) == want
    # the reference agrees with the one record reader, record.parse
    stop = want[0]
    pos = 0
    while pos < stop.end:
        got = record.parse(data, pos)
        assert got is not None
        pos = got[1]
    assert pos == stop.end
    if stop.error is None:
        assert pos == len(data) or record.parse(data, pos) is None
    elif stop.error.startswith("expected id") or "breaks its MSG" in stop.error:
        assert record.parse(data, pos) is not None
    else:
        with pytest.raises(record.RecordError) as info:
            record.parse(data, pos)
        assert info.value.reason == stop.error
    assert sum(want[1]) == want[0].end


def test_scan_says_why_and_where(impl: str) -> None:
    fn = scan_fn(impl)
    data, _ = CORPUS["id gap"]
    at = len(encode(1, b"a") + encode(2, b"b"))
    assert fn(data, 0, 1) == Scan(at, 3, 0, at, 2, record.checksum(2, b"b"), "expected id 3, found 4")
    data, _ = CORPUS["MSG count skips"]
    assert fn(data, 0, 1).error == "record 2 breaks its MSG (more=0, expected 1)"
    data, _ = CORPUS["bad crc in a body"]
    assert fn(data, 0, 1).error == "checksum mismatch for id 2"
    data, _ = CORPUS["last MSG incomplete"]
    got = fn(data, 0, 1)
    assert (got.end, got.next_id, got.more, got.batch_end, got.batch_id, got.error) == (
        len(data), 4, 1, len(encode(1, b"a")), 1, None)
    # inside a MSG: two records due, then one
    msg = encode_batch_pure(1, [b"a", b"b", b"c"])[0]
    first = len(encode(1, b"a", 2))
    assert fn(msg, first, 2, 2, 77) == Scan(len(msg), 4, 0, len(msg), 3, record.checksum(3, b"c"), None)
    assert fn(msg, first, 2, 0, 77).batch_crc == record.checksum(3, b"c")
    assert fn(msg[:first + 3], first, 2, 2, 77) == Scan(first, 2, 2, first, 1, 77, None)


def _rule_points(sizes: list[int], first_id: int, base: int, due: int, interval: int
                 ) -> tuple[list[int], int]:
    """SparseIndex.add's rule over the records' starts, one record at a time."""
    points: list[int] = []
    at = base
    for i, size in enumerate(sizes):
        if at >= due:
            points += (first_id + i, at)
            due = at + interval
        at += size
    return points, due


@pytest.mark.parametrize("name", list(CORPUS))
@pytest.mark.parametrize("base, due, interval", [(0, 0, 0), (0, 0, 1), (3, 0, 64), (0, 0, 4096),
                                                 (1000, 1150, 200), (5, 10**9, 64)])
def test_scan_points_follow_the_index_rule(name: str, impl: str, base: int, due: int, interval: int) -> None:
    data, first_id = CORPUS[name]
    fn = scan_fn(impl)
    want_scan, sizes = _whole(scan_records_pure, data, first_id)
    want = _rule_points(sizes, first_id, base, due, interval)
    points: list[int] = []
    got = fn(data, 0, first_id, 0, 0, None, points, base, due, interval)
    assert (points, got.due) == want
    assert got._replace(due=0) == want_scan
    # streamed: the caller carries due and the points across calls, as the Replicator does
    parts = [random_chunks(data, 7, 4096)] if len(data) > 20_000 else [bytewise(data), random_chunks(data, 7, 9)]
    for chunks in parts:
        buf, pos, next_id, more, at_due, points = bytearray(), 0, first_id, 0, due, []
        for part in chunks:
            buf += part
            got = fn(buf, pos, next_id, more, 0, None, points, base, at_due, interval)
            pos, next_id, more, at_due = got.end, got.next_id, got.more, got.due
            if got.error is not None:
                break
        assert (points, at_due) == want


def test_native_rejects_wrong_arguments() -> None:
    if native is None:
        pytest.skip(NATIVE_MISSING)
    with pytest.raises(TypeError):
        native.scan(b"", 0, 1, 0, 0, ())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.scan("text", 0, 1, 0, 0, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.scan(b"", 0, 1, 0, 0, None, ())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native.encode_batch(1, [b"a", "text"])
    with pytest.raises(TypeError):
        native.encode_batch(1, 5)


# -- encode_batch --------------------------------------------------------------------------------

@pytest.mark.parametrize("first", [1, 9, 10, 99, 12345, 10**18, 9 * 10**18 + 5])
def test_encode_batch_same_bytes(first: int, impl: str) -> None:
    enc = encode_batch_pure if impl == "pure" else record.encode_batch
    rng = random.Random(first)
    for n in (0, 1, 2, 11, 101):
        bodies = [bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 9, 10, 100, 1000))))
                  for _ in range(n)]
        assert enc(first, bodies) == encode_batch_pure(first, bodies)
        assert enc(first, [bytearray(b) for b in bodies]) == encode_batch_pure(first, bodies)
        data, sizes = enc(first, bodies)
        got = scan_records_pure(data, 0, first)
        assert (got.end, got.error, got.next_id) == (len(data), None, first + n)
    big = os.urandom(1 << 20)
    assert enc(first, [big, b""]) == encode_batch_pure(first, [big, b""])


# -- the callers: the follower and partition.scan --------------------------------------------

def _replicate(fn: ScanFn, data: bytes, parts: Iterator[bytes], monkeypatch: pytest.MonkeyPatch
               ) -> tuple[list[Write], str | None]:
    monkeypatch.setattr(replicator_mod, "scan_records", fn)
    rep = Replicator(1, 0, 0)
    writes: list[Write] = []
    off = 0
    chunks = list(parts)
    try:
        for i, part in enumerate(chunks):
            w = rep.on_data(Data(1, off, part, i == len(chunks) - 1))
            off += len(part)
            if w is not None:
                writes.append(w)
    except BadStream as exc:
        return writes, str(exc)
    return writes, None


@pytest.mark.parametrize("name", [n for n in CORPUS if not n.startswith("torn at")
                                  and CORPUS[n][1] == 1 and len(CORPUS[n][0]) < 20_000])
def test_replicator_same_writes_and_errors(name: str, impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data, _ = CORPUS[name]
    if not data:
        return
    fn = scan_fn(impl)
    for parts in ([data], list(bytewise(data)), list(random_chunks(data, 5, 17))):
        want = _replicate(scan_records_pure, data, iter(parts), monkeypatch)
        assert _replicate(fn, data, iter(parts), monkeypatch) == want
    writes, error = want
    if CORPUS[name] == (data, 1) and _whole(scan_records_pure, data, 1)[0].error is None:
        assert error is None or "does not end where a MSG ends" in error


@pytest.mark.parametrize("name", ["valid log", "big body", "last MSG incomplete", "id gap", "bad crc in a body",
                                  "garbage after records", "header too long", "torn at 20", "MSG count grows"])
def test_partition_scan_same_result(name: str, impl: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data, first_id = CORPUS[name]
    path = tmp_path / "p.log"
    path.write_bytes(b"xyz" + data)
    fd = os.open(path, os.O_RDONLY)
    try:
        results = []
        for fn in (scan_records_pure, scan_fn(impl)):
            monkeypatch.setattr(partition, "scan_records", fn)
            monkeypatch.setattr(partition, "BLOCK", 4096)  # records across block ends
            runs: list[tuple[int, list[int]]] = []
            got = partition.scan(fd, 3, 3 + len(data), first_id,
                                 lambda first, starts, n: runs.append((first, list(starts[:n]))))
            err = got.error
            results.append(((got.end, got.last_id, got.batch_end, got.batch_last_id),
                            None if err is None else (err.reason, err.offset, err.torn), runs))
        assert results[0] == results[1]
    finally:
        os.close(fd)


# -- the client's run reader: read_records ---------------------------------------------------

RunReader = Callable[..., tuple[list[object], int]]


def run_reader(impl: str) -> RunReader:
    if impl == "pure":
        return replies.read_records_pure
    assert native is not None
    return native.read_records  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PlainRecord:  # no slots: the native reader sets its fields the generic way
    id: int
    body: bytes
    more: int = 0


class SubRecord(record.Record):  # Record's slots, inherited
    __slots__ = ()


def _runs(fn: RunReader, parts: Iterator[bytes], max_body: int, record_type: type, limit: int
          ) -> tuple[list[list[object]], int]:
    """The runs read as bytes arrive in parts, each call from where the last one stopped."""
    buf = bytearray()
    pos = 0
    runs: list[list[object]] = []
    for part in parts:
        buf += part
        while True:
            run, end = fn(buf, pos, max_body, record_type, limit)
            assert (end > pos) == bool(run)
            if not run:
                break
            runs.append(run)
            pos = end
    return runs, pos


@pytest.mark.parametrize("name", list(CORPUS))
def test_read_records_corpus_whole_and_in_chunks(name: str, impl: str) -> None:
    data, first_id = CORPUS[name]
    fn = run_reader(impl)
    pure = replies.read_records_pure
    for max_body in (100, 1 << 20):
        want = pure(data, 0, max_body, record.Record, 0)
        assert fn(data, 0, max_body, record.Record, 0) == want
        assert fn(memoryview(data), 0, max_body, record.Record, 0) == want
        assert fn(bytearray(data), 0, max_body, record.Record, 0) == want
        assert fn(data, len(data), max_body, record.Record, 0) == ([], len(data))
        assert fn(data, 0, max_body, PlainRecord, 0) == pure(data, 0, max_body, PlainRecord, 0)
        assert fn(data, 0, max_body, SubRecord, 2) == pure(data, 0, max_body, SubRecord, 2)
        run, end = want
        # a run of whole, valid records with consecutive ids: what record.parse reads
        pos = 0
        for i, rec in enumerate(run):
            got = record.parse(data, pos)
            assert got is not None and got[0] == rec and len(rec.body) <= max_body  # type: ignore[attr-defined]
            assert rec.id == run[0].id + i  # type: ignore[attr-defined]
            pos = got[1]
        assert pos == end
        chunkings = [bytewise(data), random_chunks(data, 7, 9), seeded(3)(data)]
        if len(data) > 20_000:
            chunkings = [random_chunks(data, 7, 4096)]
        for parts in chunkings:
            chunks = list(parts)
            for limit in (0, 1, 3):
                got_runs = _runs(fn, iter(chunks), max_body, record.Record, limit)
                assert got_runs == _runs(pure, iter(chunks), max_body, record.Record, limit)
                assert all(0 < len(r) <= (limit or len(r)) for r in got_runs[0])
                # a run never takes a record the whole buffer would not (ids may restart across runs)
                flat = [r for one in got_runs[0] for r in one]
                assert flat[:len(run)] == run and got_runs[1] >= end


def test_read_records_checks_every_crc(impl: str) -> None:
    """Bodies of every length up to 300 (the native CRC works 8 bytes at a
    time, then byte by byte) and either side of 512 (where it hands over to
    zlib's), ids of every width, records at odd offsets (unaligned loads);
    one flipped bit anywhere the CRC covers is refused."""
    fn = run_reader(impl)
    rng = random.Random(5)
    for n in [*range(300), 503, 504, 511, 512, 513, 5000]:
        body = bytes(rng.randrange(256) for _ in range(n))
        id = rng.randrange(1, 10 ** rng.randint(1, 19))
        pad = n % 8
        data = b"x" * pad + encode(id, body, n % 4)
        assert fn(data, pad, 5000, record.Record, 0) == ([record.Record(id, body, n % 4)], len(data))
        body_at = len(data) - 2 - n
        for at in {rng.randrange(pad, len(data)), rng.randrange(body_at, body_at + n) if n else pad}:
            bad = _flip(data, at)
            assert fn(bad, pad, 5000, record.Record, 0) == ([], pad), (n, at)
            assert replies.read_records_pure(bad, pad, 5000, record.Record, 0) == ([], pad)


def test_read_records_rejects_wrong_arguments() -> None:
    if native is None:
        pytest.skip(NATIVE_MISSING)
    with pytest.raises(TypeError):
        native.read_records("text", 0, 100, record.Record, 0)
    with pytest.raises(TypeError):
        native.read_records(b"", 0, 100, "Record", 0)
    with pytest.raises(TypeError):
        native.read_records(b"", 0, 100, record.Record)


# -- the client's record reader: ReplyParser.next_record and next_records ----------------------

def _judge_only(buf: object, pos: int, max_body: int, record_type: type, limit: int) -> tuple[list[object], int]:
    """No run reader at all: next_record's judging code reads every record (the reference)."""
    return [], pos


def _read_stream(parts: Iterator[bytes], max_body: int, step: str = "next_record") -> list[object]:
    """Every outcome of ReplyParser.next_record (or next_records, its runs
    flattened) over a READ stream arriving in parts."""
    parser = ReplyParser(max_body=max_body)
    next_item = getattr(parser, step)
    out: list[object] = []
    for part in parts:
        parser.receive_data(part)
        while True:
            try:
                got = next_item()
            except errors.LogdError as exc:
                out.append((type(exc).__name__, str(exc)))
                return out
            if got is NEED_DATA:
                break
            if isinstance(got, list):
                assert 0 < len(got) <= replies.MAX_RUN
                out.extend(got)
                continue
            out.append(got)
            if isinstance(got, Eof):
                return out
    return out


STREAMS = {name: data for name, (data, first) in CORPUS.items() if first == 1 and 0 < len(data) < 20_000}
STREAMS.update({
    "with EOF": _log(1, [[b"a", b"bb"], [b"c"]]) + b"+EOF\r\n",
    "error line": encode(1, b"a") + b"ERR_CLIENT NOTRETAINED id 1 is gone\r\n",
    "error line after a run": _log(1, [[b"a", b"b", b"c"]]) + b"ERR CORRUPT record 4 fails\r\n",
    "over max_body": encode(1, b"a" * 100) + encode(2, b"b" * 101),
    "over max_body after a run": _log(1, [[b"a"] * 5]) + encode(6, b"b" * 101) + encode(7, b"c"),
    "EOF then more": _log(1, [[b"a"] * 3]) + b"+EOF\r\n" + encode(4, b"d"),
    "ids restart": _log(1, [[b"a"] * 3]) + _log(1, [[b"b"] * 2]) + b"+EOF\r\n",
    "longer than a run": _log(1, [[b"r"] * 100] * 11) + b"+EOF\r\n",
})


@pytest.mark.parametrize("name", list(STREAMS))
def test_client_record_reader_same_outcomes(name: str, impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = STREAMS[name]
    for parts in ([data], list(bytewise(data)), list(random_chunks(data, 11, 13))):
        monkeypatch.setattr(replies, "_read_records", _judge_only)
        want = _read_stream(iter(parts), 100)
        monkeypatch.setattr(replies, "_read_records", run_reader(impl))
        assert _read_stream(iter(parts), 100) == want
        assert _read_stream(iter(parts), 100, "next_records") == want


def test_the_run_reader_is_the_native_one_when_built() -> None:
    want = replies.read_records_pure if native is None else native.read_records
    assert replies._read_records is want


@pytest.mark.slow
def test_builds_and_runs_without_a_compiler(tmp_path: Path) -> None:
    """``CC=/bin/false pip wheel .`` succeeds (the extension is optional) and
    the wheel's logd runs pure Python. Slow (pip builds in an isolated
    environment, fetching setuptools): ``python -m pytest -m slow -k compiler``."""
    import shutil
    src = tmp_path / "src"  # a copy: pip builds in the tree (build/) and must not see our .so
    shutil.copytree(Path(__file__).resolve().parents[2], src,
                    ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "*.so", "__pycache__"))
    env = dict(os.environ, CC="/bin/false")
    env.pop("LOGD_PURE", None)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("logd-*.whl")
    import zipfile
    names = zipfile.ZipFile(wheel).namelist()
    assert "logd/speedups.py" in names and not [n for n in names if n.endswith((".so", ".c"))], names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    # -S: no site-packages, so neither the editable install nor its .so is seen
    code = ("import logd.speedups as s, logd.record as r; "
            "print(s.__file__, s.IMPLEMENTATION, r.encode_batch(1, [b'a'])[0] == r.encode(1, b'a'))")
    got = subprocess.run([sys.executable, "-S", "-c", code], env=dict(env, PYTHONPATH=str(tmp_path / "site")),
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    path, impl, same = got.stdout.split()
    assert path.startswith(str(tmp_path)) and (impl, same) == ("pure", "True"), got.stderr
