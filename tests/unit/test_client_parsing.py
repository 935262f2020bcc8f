"""The client's pure parts, and its reply handling over a scripted socket.

The scripted socket hands out a fixed byte stream (what a server would send)
whole, one byte at a time, or in random chunks, so the client's buffering is
exercised at every boundary. No network, no sleeps.
"""

from __future__ import annotations

import random
import socket
from collections import deque
from typing import Callable, Iterator

import msgpack
import pytest

from logd import errors
from logd.client import (
    DEFAULT_PORT,
    Client,
    ObjRecord,
    backoff_delay,
    batches,
    pack,
    parse_address,
    unpack,
)
from logd.clientcli import exit_code, parse_from, UsageError
from logd.record import Record, encode

Chunker = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    if data:
        yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def random_chunks(data: bytes, seed: int = 7) -> Iterator[bytes]:
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.randint(1, 40)
        yield data[i : i + n]
        i += n


CHUNKERS = [whole, bytewise, random_chunks]


class ScriptedSocket:
    """Plays back a server's bytes; records what the client sent."""

    def __init__(self, incoming: bytes, chunker: Chunker) -> None:
        self._chunks = deque(chunker(incoming))
        self.sent = bytearray()
        self.closed = False

    def recv(self, n: int) -> bytes:
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        if not self._chunks:
            return b""  # the server closed
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError(9, "Bad file descriptor")
        self.sent += data

    def settimeout(self, t: float | None) -> None:
        pass

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def scripted(incoming: bytes, chunker: Chunker) -> tuple[Client, ScriptedSocket]:
    sock = ScriptedSocket(incoming, chunker)
    return Client("127.0.0.1:1", sock=sock), sock  # type: ignore[arg-type]


def records(first: int, bodies: list[bytes]) -> bytes:
    return b"".join(encode(first + i, b) for i, b in enumerate(bodies))


BODIES = [b"hello", b"a\r\nb", bytes(range(256)), b"+EOF\r\n", b"x" * 5000]


# -- pure helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:7070", (socket.AF_INET, ("127.0.0.1", 7070))),
        ("localhost", (socket.AF_INET, ("localhost", DEFAULT_PORT))),
        (":9", (socket.AF_INET, ("127.0.0.1", 9))),
        ("[::1]:7070", (socket.AF_INET6, ("::1", 7070))),
        ("[::1]", (socket.AF_INET6, ("::1", DEFAULT_PORT))),
        ("::1", (socket.AF_INET6, ("::1", DEFAULT_PORT))),
        ("/run/logd.sock", (socket.AF_UNIX, "/run/logd.sock")),
        ("./logd.sock", (socket.AF_UNIX, "./logd.sock")),
        ("unix:logd.sock", (socket.AF_UNIX, "logd.sock")),
    ],
)
def test_parse_address(address: str, expected: tuple[int, object]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["host:port", "host:70000", "[::1", "[::1]x"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError):
        parse_address(address)


def test_backoff_grows_caps_and_jitters() -> None:
    lo = [backoff_delay(n, 0.1, 2.0, rand=lambda a, b: a) for n in range(12)]
    hi = [backoff_delay(n, 0.1, 2.0, rand=lambda a, b: b) for n in range(12)]
    assert lo[0] == pytest.approx(0.05) and hi[0] == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(hi, hi[1:]))  # never shrinks
    assert max(hi) == pytest.approx(2.0) and max(lo) == pytest.approx(1.0)
    assert backoff_delay(10_000, 0.1, 2.0) <= 2.0  # no overflow on long outages
    rng = random.Random(1)
    samples = {backoff_delay(3, 0.1, 2.0, rand=rng.uniform) for _ in range(20)}
    assert len(samples) > 1 and all(0.4 <= s <= 0.8 for s in samples)


def test_batches_by_count_and_bytes() -> None:
    assert list(batches([b"a"] * 5, max_count=2)) == [[b"a", b"a"], [b"a", b"a"], [b"a"]]
    assert list(batches([b"aaa", b"bbb", b"c"], max_bytes=6)) == [[b"aaa", b"bbb"], [b"c"]]
    assert list(batches([b"x" * 10, b"y"], max_bytes=4)) == [[b"x" * 10], [b"y"]]
    assert list(batches([])) == []


def test_pack_roundtrip() -> None:
    obj = {"a": 1, "b": [b"\x00bin", "text"], 3: None}
    assert unpack(pack(obj)) == obj


@pytest.mark.parametrize(
    "value, expected",
    [
        ("begin", ("begin", 0)),
        ("beginning", ("begin", 0)),
        ("end", ("end", 0)),
        ("-10", ("last", 10)),
        ("42", ("id", 42)),
    ],
)
def test_parse_from(value: str, expected: tuple[str, int]) -> None:
    assert parse_from(value) == expected


@pytest.mark.parametrize("value", ["0", "-0", "x", "", "1.5", "--3"])
def test_parse_from_rejects(value: str) -> None:
    with pytest.raises(UsageError):
        parse_from(value)


def test_exit_codes() -> None:
    assert exit_code(errors.NotRetained("x", first=5, head=9)) == 4
    assert exit_code(errors.ConnectionLost("x")) == 3
    assert exit_code(errors.TooManyClients("x")) == 3
    assert exit_code(errors.InvalidArgument("x")) == 1
    assert exit_code(errors.ChecksumError("x")) == 1
    assert exit_code(errors.StorageError("x")) == 1
    assert exit_code(UsageError("x")) == 2


# -- replies ------------------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_simple_commands(chunker: Chunker) -> None:
    stats = msgpack.packb({"head": 9, "clients": 2, "version": "0.1"})
    incoming = b"OK 12\r\nOK 9\r\nPONG\r\nOK %d\r\n%s\r\n" % (len(stats), stats)
    client, sock = scripted(incoming, chunker)
    assert client.append(b"a", b"b\r\nc", b"d") == range(10, 13)
    assert client.head() == 9
    assert client.ping() >= 0
    assert client.stats() == {"head": 9, "clients": 2, "version": "0.1"}
    assert bytes(sock.sent) == (
        b"MSG 3\r\n1 a\r\n4 b\r\nc\r\n1 d\r\nHEAD 0\r\nPING 0\r\nSTATS 1\r\n7 msgpack\r\n"
    )


def test_append_needs_bodies() -> None:
    client, sock = scripted(b"", whole)
    with pytest.raises(errors.InvalidArgument):
        client.append()
    assert sock.sent == b""


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_error_reply_keeps_connection(chunker: Chunker) -> None:
    incoming = b"ERR_CLIENT BADREQUEST empty message not allowed (argument 1)\r\nOK 3\r\n"
    client, sock = scripted(incoming, chunker)
    with pytest.raises(errors.InvalidArgument):
        client.append(b"x")
    assert client.connected
    assert client.head() == 3


def test_refused_carries_primary() -> None:
    client, _ = scripted(b"ERR_CLIENT REFUSED read-only (primary=10.0.0.2:1774)\r\n", whole)
    with pytest.raises(errors.Refused) as info:
        client.append(b"x")
    assert info.value.primary == "10.0.0.2:1774"


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_protocol_error_drops_connection(chunker: Chunker) -> None:
    client, sock = scripted(b"ERR_CLIENT PROTOCOL argument too long\r\n", chunker)
    with pytest.raises(errors.ProtocolError):
        client.append(b"x")
    assert sock.closed and not client.connected


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_close_mid_reply_is_connection_lost(chunker: Chunker) -> None:
    client, sock = scripted(b"OK 1", chunker)
    with pytest.raises(errors.ConnectionLost):
        client.head()
    assert sock.closed


def test_unexpected_reply_is_protocol_error() -> None:
    client, sock = scripted(b"PONG\r\n", whole)
    with pytest.raises(errors.ProtocolError):
        client.head()
    assert sock.closed


# -- pipelining ------------------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_pipeline_results_in_order(chunker: Chunker) -> None:
    incoming = b"OK 2\r\nOK 2\r\nPONG\r\nOK 5\r\n"
    client, sock = scripted(incoming, chunker)
    results = client.pipeline().append(b"a", b"b").head().ping().append(b"c", b"d", b"e").execute()
    assert results == [range(1, 3), 2, True, range(3, 6)]
    assert bytes(sock.sent).count(b"MSG") == 2


@pytest.mark.parametrize("window", [1, 2, 1000])
def test_pipeline_window(window: int) -> None:
    n = 10
    incoming = b"".join(b"OK %d\r\n" % i for i in range(1, n + 1))
    client, sock = scripted(incoming, random_chunks)
    pipe = client.pipeline()
    for i in range(n):
        pipe.append(b"m%d" % i)
    assert pipe.execute(window=window) == [range(i, i + 1) for i in range(1, n + 1)]


def test_pipeline_error_reads_all_replies_then_raises() -> None:
    incoming = b"OK 1\r\nERR_CLIENT BADREQUEST nope\r\nOK 2\r\nOK 2\r\n"
    client, sock = scripted(incoming, bytewise)
    pipe = client.pipeline().append(b"a").append(b"b").append(b"c")
    with pytest.raises(errors.InvalidArgument):
        pipe.execute()
    assert client.head() == 2  # still in step


def test_pipeline_error_in_place() -> None:
    incoming = b"OK 1\r\nERR DISKFULL no space\r\nPONG\r\n"
    client, _ = scripted(incoming, whole)
    results = client.pipeline().append(b"a").append(b"b").ping().execute(raise_on_error=False)
    assert results[0] == range(1, 2)
    assert isinstance(results[1], errors.DiskFull)
    assert results[2] is True


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_append_stream_window(chunker: Chunker) -> None:
    n = 50
    incoming = b"".join(b"OK %d\r\n" % (2 * i) for i in range(1, n + 1))
    client, sock = scripted(incoming, chunker)
    got = client.append_many(([b"x", b"y"] for _ in range(n)), window=4)
    assert got == [range(2 * i - 1, 2 * i + 1) for i in range(1, n + 1)]
    assert bytes(sock.sent) == b"MSG 2\r\n1 x\r\n1 y\r\n" * n


def test_append_stream_abandoned_drops_connection() -> None:
    client, sock = scripted(b"OK 1\r\nOK 2\r\nOK 3\r\n", whole)
    it = client.append_stream(([b"x"] for _ in range(3)), window=2)
    assert next(it) == range(1, 2)
    it.close()  # one reply still due
    assert sock.closed


# -- READ streams ----------------------------------------------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_yields_verified_records(chunker: Chunker) -> None:
    incoming = b"OK\r\n" + records(7, BODIES) + b"+EOF\r\nOK 11\r\n"
    client, sock = scripted(incoming, chunker)
    got = list(client.read(7, len(BODIES)))
    assert got == [Record(7 + i, b) for i, b in enumerate(BODIES)]
    assert sock.sent == b"READ 2\r\n1 7\r\n1 5\r\n"
    assert client.head() == 11  # the connection is usable after +EOF


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_from_zero_accepts_any_first_id(chunker: Chunker) -> None:
    incoming = b"OK\r\n" + records(100, [b"a", b"b"]) + b"+EOF\r\n"
    client, _ = scripted(incoming, chunker)
    assert [r.id for r in client.read(0, 2)] == [100, 101]


@pytest.mark.parametrize(
    "ids, start, bad_at",
    [
        ([1, 2, 4], 1, 2),  # a gap
        ([1, 2, 2], 1, 2),  # a repeat
        ([5, 6], 4, 0),  # the wrong first id
        ([3, 2], 0, 1),  # going backwards
    ],
)
@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_sequence_errors(ids: list[int], start: int, bad_at: int, chunker: Chunker) -> None:
    incoming = b"OK\r\n" + b"".join(encode(i, b"m%d" % i) for i in ids) + b"+EOF\r\n"
    client, sock = scripted(incoming, chunker)
    got = []
    with pytest.raises(errors.SequenceError):
        for rec in client.read(start, len(ids)):
            got.append(rec.id)
    assert got == ids[:bad_at]  # nothing past the problem is yielded
    assert sock.closed


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_checksum_error(chunker: Chunker) -> None:
    good = records(1, [b"one", b"two"])
    bad = bytearray(encode(3, b"three"))
    bad[-4] ^= 0x20  # flip a body byte
    incoming = b"OK\r\n" + good + bytes(bad) + b"+EOF\r\n"
    client, sock = scripted(incoming, chunker)
    got = []
    with pytest.raises(errors.ChecksumError):
        for rec in client.read(1, 3):
            got.append(rec.id)
    assert got == [1, 2]
    assert sock.closed


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_not_retained(chunker: Chunker) -> None:
    incoming = b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=50 head=90)\r\nPONG\r\n"
    client, sock = scripted(incoming, chunker)
    with pytest.raises(errors.NotRetained) as info:
        list(client.read(3, 10))
    assert (info.value.first, info.value.head) == (50, 90)
    assert not sock.closed  # answered before the stream began
    assert client.ping() >= 0


def test_read_out_of_range() -> None:
    client, _ = scripted(b"ERR_CLIENT RANGE start past head+1 (first=1 head=9)\r\n", whole)
    with pytest.raises(errors.OutOfRange) as info:
        list(client.read(20, 1))
    assert not isinstance(info.value, errors.NotRetained)
    assert info.value.head == 9


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_server_error_mid_stream(chunker: Chunker) -> None:
    incoming = b"OK\r\n" + records(1, [b"a"]) + b"ERR CORRUPT record 2 fails its checksum\r\n"
    client, sock = scripted(incoming, chunker)
    got = []
    with pytest.raises(errors.CorruptLogError):
        for rec in client.read(1, 5):
            got.append(rec.id)
    assert got == [1]
    assert sock.closed


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_connection_lost_mid_record(chunker: Chunker) -> None:
    incoming = b"OK\r\n" + records(1, [b"a", b"bbbb"])[:-3]
    client, sock = scripted(incoming, chunker)
    got = []
    with pytest.raises(errors.ConnectionLost):
        for rec in client.read(1, 2):
            got.append(rec.id)
    assert got == [1]


def test_read_early_eof_asks_again_from_next_id() -> None:
    # The server may end a stream early (a slow reader); the client resumes.
    incoming = b"OK\r\n" + records(1, [b"a", b"b"]) + b"+EOF\r\nOK\r\n" + records(3, [b"c"]) + b"+EOF\r\n"
    client, sock = scripted(incoming, random_chunks)
    assert [r.body for r in client.read(1, 3)] == [b"a", b"b", b"c"]
    assert sock.sent == b"READ 2\r\n1 1\r\n1 3\r\nREAD 2\r\n1 3\r\n1 1\r\n"


def test_read_eof_without_records_is_an_error() -> None:
    client, _ = scripted(b"OK\r\n+EOF\r\n", whole)
    with pytest.raises(errors.ProtocolError):
        list(client.read(1, 3))


def test_read_abandoned_drops_connection() -> None:
    incoming = b"OK\r\n" + records(1, [b"a", b"b", b"c"]) + b"+EOF\r\n"
    client, sock = scripted(incoming, whole)
    it = client.read(1, 3)
    assert next(it).id == 1
    it.close()  # records 2 and 3 are still in flight
    assert sock.closed and not client.connected


def test_read_limit_must_be_positive() -> None:
    client, _ = scripted(b"", whole)
    with pytest.raises(ValueError):
        client.read(1, 0)


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_decode(chunker: Chunker) -> None:
    objs = [{"n": 1}, {"n": 2, "tags": ["a"]}]
    incoming = b"OK\r\n" + records(1, [pack(o) for o in objs]) + b"+EOF\r\n"
    client, _ = scripted(incoming, chunker)
    got = list(client.read(1, 2, decode=True))
    assert [r.obj for r in got] == objs
    assert all(isinstance(r, ObjRecord) for r in got)


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_follow_shutdown_without_reconnect_raises(chunker: Chunker) -> None:
    incoming = b"OK\r\n" + records(1, [b"a", b"b"]) + b"ERR SHUTDOWN the server is stopping\r\n"
    client, sock = scripted(incoming, chunker)
    got = []
    with pytest.raises(errors.ShuttingDown):
        for rec in client.follow(1):
            got.append(rec.body)
    assert got == [b"a", b"b"]
    assert sock.sent == b"READ 2\r\n1 1\r\n1 0\r\n"


def test_follow_abandoned_drops_connection() -> None:
    incoming = b"OK\r\n" + records(1, [b"a", b"b"])
    client, sock = scripted(incoming, whole)
    for rec in client.follow(0):
        break
    assert sock.closed


def test_follow_reconnect_gives_up_after_max_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scripted socket closes after one record, and every reconnect fails,
    # so max_retries ends the follow. Backoff sleeps are recorded, not slept.
    incoming = b"OK\r\n" + records(1, [b"a"])
    client, sock = scripted(incoming, whole)

    def refuse() -> None:
        if client._sock is None:
            raise errors.ConnectionLost("connection refused")

    sleeps: list[float] = []
    monkeypatch.setattr(client, "connect", refuse)
    monkeypatch.setattr("logd.client.time.sleep", sleeps.append)
    seen: list[int] = []
    got = []
    with pytest.raises(errors.ConnectionLost):
        for rec in client.follow(
            1,
            reconnect=True,
            max_retries=3,
            backoff_base=0.1,
            backoff_cap=0.3,
            on_reconnect=lambda n, exc: seen.append(n),
        ):
            got.append(rec.id)
    assert got == [1]
    assert seen == [1, 2, 3]
    assert len(sleeps) == 3 and all(0.05 <= s <= 0.3 for s in sleeps)


def test_close_ends_follow_quietly() -> None:
    # close() (e.g. from another thread) ends a follow instead of raising or reconnecting.
    incoming = b"OK\r\n" + records(1, [b"a", b"b"])
    client, sock = scripted(incoming, whole)
    got = []
    for rec in client.follow(1, reconnect=True):
        got.append(rec.id)
        client.close()
    assert got == [1]
    assert sock.closed
