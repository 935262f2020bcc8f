"""The client's pure parts, and its reply handling over a scripted socket.

The scripted socket hands out a fixed byte stream (what a server would send)
whole, one byte at a time, or in random chunks, so the client's buffering is
exercised at every boundary. No network, no sleeps.
"""

from __future__ import annotations

import random
import re
import socket
from collections import deque

import msgpack
import pytest

import logd
from logd import errors
from logd.client import (
    DEFAULT_PORT,
    RECV_SIZE,
    Client,
    Connection,
    ObjRecord,
    batches,
    pack,
    parse_address,
    unpack,
)
from logd.clientcli import exit_code, parse_from, UsageError
from logd.record import Record, encode
from tests.chunkers import Chunker, bytewise, seeded, whole

random7 = seeded(7, largest=40)
CHUNKERS = [whole, bytewise, random7]


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

    def recv_into(self, buf: memoryview) -> int:
        chunk = self.recv(len(buf))
        buf[: len(chunk)] = chunk
        return len(chunk)

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
        ("logs.example.com:65535", (socket.AF_INET, ("logs.example.com", 65535))),
        ("localhost", (socket.AF_INET, ("localhost", DEFAULT_PORT))),
        ("10.0.0.2", (socket.AF_INET, ("10.0.0.2", DEFAULT_PORT))),
        (":9", (socket.AF_INET, ("127.0.0.1", 9))),
        (":17801", (socket.AF_INET, ("127.0.0.1", 17801))),
        ("[::1]:7070", (socket.AF_INET6, ("::1", 7070))),
        ("[::1]", (socket.AF_INET6, ("::1", DEFAULT_PORT))),
        ("::1", (socket.AF_INET6, ("::1", DEFAULT_PORT))),
        ("/run/logd.sock", (socket.AF_UNIX, "/run/logd.sock")),
        ("./logd.sock", (socket.AF_UNIX, "./logd.sock")),
        ("./17801", (socket.AF_UNIX, "./17801")),  # a path, even if its name is a number
        ("unix:logd.sock", (socket.AF_UNIX, "logd.sock")),
    ],
)
def test_parse_address(address: str, expected: tuple[int, object]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address, hint",
    [
        ("17801", "':17801' for 127.0.0.1:17801"),  # issue 7, item 15: never dialled as 0.0.69.137
        ("0", "':0'"),
        ("host:abc", "1..65535"),
        ("host:port", "1..65535"),
        ("host:0", "1..65535"),
        ("host:70000", "1..65535"),
        ("host:-1", "1..65535"),
        ("host:１２", "1..65535"),  # full-width digits: isdigit() but not a port
        ("host:", "no port"),  # "host:$PORT" with PORT unset
        (":", "no port"),
        ("[::1]:", "no port"),
        ("[::1]:x", "1..65535"),
        ("", "empty address"),
        ("unix:", "no socket path"),
        ("[::1", "[v6addr]:port"),
        ("[::1]x", "[v6addr]:port"),
        ("[]:1774", "[v6addr]:port"),
    ],
)
def test_parse_address_rejects(address: str, hint: str) -> None:
    with pytest.raises(errors.BadAddress) as info:
        parse_address(address)
    message = str(info.value)
    assert hint in message and "\n" not in message
    assert repr(address) in message or not address
    assert isinstance(info.value, errors.LogdError)
    assert isinstance(info.value, ValueError)  # what older callers caught


def test_connect_bad_address_is_a_logd_error() -> None:
    # issue 7, item 17: a LogdError (and no socket is made for it).
    with pytest.raises(errors.LogdError) as info:
        logd.connect("host:abc")
    assert type(info.value) is errors.BadAddress
    with pytest.raises(errors.BadAddress):
        Client("17801")


def test_bad_address_exits_2() -> None:
    assert exit_code(errors.BadAddress("x")) == 2


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


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_append_reply_below_the_count_is_a_protocol_error(chunker: Chunker) -> None:
    client, sock = scripted(b"OK 1\r\n", chunker)
    with pytest.raises(errors.ProtocolError):
        client.append(b"a", b"b", b"c")  # ids 1..3 cannot end at 1
    assert sock.closed


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_shutdown_waits_for_the_close(chunker: Chunker) -> None:
    client, sock = scripted(b"OK\r\n", chunker)  # then the server closes
    client.shutdown()
    assert bytes(sock.sent) == b"SHUTDOWN 0\r\n"
    assert sock.closed and not client.connected


def test_shutdown_forbidden() -> None:
    client, sock = scripted(
        b"ERR_CLIENT FORBIDDEN SHUTDOWN is accepted only from 127.0.0.1, ::1 or the unix socket\r\n", whole
    )
    with pytest.raises(errors.Forbidden):
        client.shutdown()


def test_shutdown_answered_with_something_else() -> None:
    client, sock = scripted(b"OK 3\r\n", whole)
    with pytest.raises(errors.ProtocolError):
        client.shutdown()
    assert sock.closed


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
    assert results[:2] == [range(1, 3), 2] and results[3] == range(3, 6)
    assert type(results[2]) is float and 0 <= results[2] < 5  # seconds, as ping() returns
    assert bytes(sock.sent).count(b"MSG") == 2


@pytest.mark.parametrize("window", [1, 2, 1000])
def test_pipeline_window(window: int) -> None:
    n = 10
    incoming = b"".join(b"OK %d\r\n" % i for i in range(1, n + 1))
    client, sock = scripted(incoming, random7)
    pipe = client.pipeline()
    for i in range(n):
        pipe.append(b"m%d" % i)
    assert pipe.execute(window=window) == [range(i, i + 1) for i in range(1, n + 1)]


def test_ping_and_pipeline_ping_return_the_same_type() -> None:
    # issue 7, item 19: both are the round trip in seconds.
    client, _ = scripted(b"PONG\r\nPONG\r\n", bytewise)
    alone = client.ping()
    (piped,) = client.pipeline().ping().execute()
    assert type(alone) is type(piped) is float
    assert 0 <= alone < 5 and 0 <= piped < 5


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
    assert type(results[2]) is float


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
    client, sock = scripted(incoming, random7)
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
        if not client.connected:
            raise errors.ConnectionLost("connection refused")

    sleeps: list[float] = []
    monkeypatch.setattr(client, "connect", refuse)
    monkeypatch.setattr("logd.client.client.time.sleep", sleeps.append)
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


class Dials:
    """Stands in for Connection.dial: each call hands out a scripted socket with the next bytes."""

    def __init__(self, *incoming: bytes) -> None:
        self.incoming = list(incoming)
        self.socks: list[ScriptedSocket] = []

    def __call__(self) -> ScriptedSocket:
        self.socks.append(ScriptedSocket(self.incoming.pop(0), whole))
        return self.socks[-1]


def _resuming_client(monkeypatch: pytest.MonkeyPatch) -> tuple[Client, Dials]:
    """A client whose first READ gets records 1-3 in one receive (one run), the next 2-3."""
    monkeypatch.setattr("logd.client.client.time.sleep", lambda s: None)
    client = Client("127.0.0.1:1")
    dials = Dials(b"OK\r\n" + records(1, [b"a", b"b", b"c"]), b"OK\r\n" + records(2, [b"b", b"c"]))
    client.connection.dial = dials  # type: ignore[method-assign, assignment]
    return client, dials


def test_follow_resumes_after_the_last_record_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # A drop() mid-run (an error elsewhere on the connection) loses the rest
    # of the run with the connection: the follow asks for it again, no gap.
    client, dials = _resuming_client(monkeypatch)
    got = []
    for rec in client.follow(1, reconnect=True):
        got.append(rec.id)
        if len(got) == 1:
            client.connection.drop()
        if len(got) == 3:
            break
    assert got == [1, 2, 3]
    assert dials.socks[1].sent == b"READ 2\r\n1 2\r\n1 0\r\n"


def test_follow_resumes_after_an_error_thrown_in_mid_run(monkeypatch: pytest.MonkeyPatch) -> None:
    client, dials = _resuming_client(monkeypatch)
    it = client.follow(1, reconnect=True)
    assert next(it).id == 1
    assert it.throw(errors.ConnectionLost("thrown in")).id == 2
    assert next(it).id == 3
    assert dials.socks[0].closed and dials.socks[1].sent == b"READ 2\r\n1 2\r\n1 0\r\n"
    it.close()


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_read_many_records_in_runs(chunker: Chunker) -> None:
    bodies = [b"%d" % i * (i % 7) + b"." for i in range(300)]
    incoming = b"OK\r\n" + records(10, bodies) + b"+EOF\r\n"
    client, _ = scripted(incoming, chunker)
    assert list(client.read(10, 300)) == [Record(10 + i, b) for i, b in enumerate(bodies)]
    assert client.connected


# -- a server that cannot be trusted (issue 7, item 9) ---------------------------------


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_stats_without_crlf_is_a_protocol_error_not_a_buffer(chunker: Chunker) -> None:
    client, sock = scripted(b"OK 12" + b"x" * (RECV_SIZE + 10_000), chunker)
    with pytest.raises(errors.ProtocolError):
        client.stats()
    assert sock.closed
    assert len(sock._chunks) > 0  # gave up long before the end of the stream


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_stats_body_above_the_limit(chunker: Chunker) -> None:
    client, sock = scripted(b"OK 67108865\r\n" + b"x" * 1000, chunker)  # 64 MiB + 1
    with pytest.raises(errors.ProtocolError):
        client.stats_text()
    assert sock.closed


@pytest.mark.parametrize("chunker", CHUNKERS)
@pytest.mark.parametrize(
    "line",
    [
        b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=x head=9)",
        b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=1.5 head=9)",
        b"ERR_CLIENT RANGE start past head+1",
    ],
)
def test_read_refused_with_malformed_fields(line: bytes, chunker: Chunker) -> None:
    client, sock = scripted(line + b"\r\n", chunker)
    with pytest.raises(errors.ProtocolError) as info:
        list(client.read(3, 10))
    assert "malformed" in info.value.message
    assert exit_code(info.value) == 1  # not 2, the usage error a ValueError got
    assert sock.closed  # a server that sends this is not trusted further


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_long_corrupt_line_mid_stream_is_corrupt_log_error(chunker: Chunker) -> None:
    line = b"ERR CORRUPT record 2 in partition 00000000000000000001.log at offset 4096 fails its checksum"
    assert len(line) > 64
    client, sock = scripted(b"OK\r\n" + records(1, [b"a"]) + line + b"\r\n", chunker)
    got = []
    with pytest.raises(errors.CorruptLogError):
        for rec in client.read(1, 5):
            got.append(rec.id)
    assert got == [1]


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_long_notretained_line_mid_stream_is_not_retained(chunker: Chunker) -> None:
    line = b"ERR_CLIENT NOTRETAINED records from 2 were deleted by retention (first=500 head=900)"
    client, sock = scripted(b"OK\r\n" + records(1, [b"a"]) + line + b"\r\n", chunker)
    got = []
    with pytest.raises(errors.NotRetained) as info:
        for rec in client.follow(1):
            got.append(rec.id)
    assert got == [1]
    assert (info.value.first, info.value.head) == (500, 900)
    assert exit_code(info.value) == 4


GOOD_REPLIES = (
    b"OK 3\r\nOK 3\r\nPONG\r\n"
    + b"OK 14\r\n\x81\xa4head\x03" + b"\x81\xa1x\x01" + b"\x90\r\n"
    + b"OK\r\n" + records(1, [b"a", b"bb", b"ccc"]) + b"+EOF\r\n"
    + b"ERR_CLIENT NOTRETAINED id 3 was deleted (first=5 head=9)\r\n"
    + b"OK\r\n"
)


def _no_network() -> socket.socket:
    raise ConnectionRefusedError(111, "no network in unit tests")


def _exercise(client: Client) -> None:
    client.append(b"a", b"b", b"c")
    client.head()
    client.ping()
    client.stats()
    list(client.read(1, 3))
    list(client.follow(1))
    client.shutdown()


def test_damaged_replies_raise_only_logd_errors() -> None:
    # Whatever the server sends, the client raises a LogdError: never a
    # ValueError (which the CLI would report as a usage error) or a crash.
    rng = random.Random(9)
    for trial in range(600):
        data = bytearray(GOOD_REPLIES)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            op = rng.randrange(4)
            if op == 0:
                data[at] = rng.randrange(256)
            elif op == 1:
                data[at:at] = rng.choice([b"\r\n", b"9" * 25, b"x", b" ", b"=1.5", b"+", b"ERR "])
            elif op == 2:
                del data[at : at + rng.randint(1, 6)]
            else:  # a number replaced: ids, lengths, the fields of an error line
                numbers = list(re.finditer(rb"\d+", bytes(data)))
                m = rng.choice(numbers)
                token = rng.choice([b"x", b"1.5", b"-1", b"", b"1e3", b"9" * 30, b"9" * 5000])
                data[m.start() : m.end()] = token
        client, _ = scripted(bytes(data), rng.choice(CHUNKERS))
        client.connection.dial = _no_network  # type: ignore[method-assign]
        for step in range(7):  # bounded: one pass over the methods, reconnects refused
            try:
                _exercise(client)
                break
            except errors.LogdError:
                if not client.connected:
                    break


# -- waiting for a server that is not up yet (issue 7, item 11) -------------------------


class Dialer:
    """Stands in for Connection.dial: refuses ``refusals`` times, then hands out a scripted socket."""

    def __init__(self, refusals: int, incoming: bytes) -> None:
        self.refusals = refusals
        self.incoming = incoming
        self.calls = 0
        self.sock: ScriptedSocket | None = None

    def __call__(self) -> ScriptedSocket:
        self.calls += 1
        if self.calls <= self.refusals:
            raise ConnectionRefusedError(111, "Connection refused")
        self.sock = ScriptedSocket(self.incoming, whole)
        return self.sock


class FakeClock:
    """time.monotonic and time.sleep for the connection module: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s >= 0
        self.sleeps.append(s)
        self.now += s


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr("logd.client.connection.time.monotonic", c.monotonic)
    monkeypatch.setattr("logd.client.connection.time.sleep", c.sleep)
    return c


def test_connect_waits_for_the_server(clock: FakeClock) -> None:
    client = Client("127.0.0.1:1", wait=30)
    dial = Dialer(6, b"OK 4\r\n")
    client.connection.dial = dial  # type: ignore[method-assign, assignment]
    client.connect()
    assert dial.calls == 7 and client.connected
    assert client.head() == 4
    # Capped, jittered backoff: never 0, each at most the cap, growing at first.
    assert len(clock.sleeps) == 6 and all(0.02 <= s <= 1.0 for s in clock.sleeps)
    assert clock.sleeps[-1] >= 0.5 and sum(clock.sleeps) < 30


def test_connect_wait_is_a_bound(clock: FakeClock) -> None:
    client = Client("127.0.0.1:1")
    dial = Dialer(10**6, b"")
    client.connection.dial = dial  # type: ignore[method-assign, assignment]
    with pytest.raises(errors.ConnectionLost) as info:
        client.connect(wait=5.0)
    assert 1000.0 + 5.0 == pytest.approx(clock.now)  # the last sleep is cut to the deadline
    assert dial.calls > 5 and max(clock.sleeps) <= 1.0
    assert "attempts in 5 s" in info.value.message
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_connect_without_wait_tries_once(clock: FakeClock) -> None:
    client = Client("127.0.0.1:1")
    dial = Dialer(1, b"")
    client.connection.dial = dial  # type: ignore[method-assign, assignment]
    with pytest.raises(errors.ConnectionLost):
        client.connect()
    assert dial.calls == 1 and clock.sleeps == []


def test_module_connect_takes_wait(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    dial = Dialer(3, b"PONG\r\n")
    monkeypatch.setattr(Connection, "dial", lambda self: dial())
    client = logd.connect("127.0.0.1:1", wait=10)
    assert dial.calls == 4 and client.wait == 10
    assert client.ping() >= 0


def test_close_ends_a_connect_that_is_waiting(clock: FakeClock) -> None:
    client = Client("127.0.0.1:1", wait=60)

    def dial() -> ScriptedSocket:
        if len(clock.sleeps) == 3:
            client.close()  # as another thread would
        raise ConnectionRefusedError(111, "Connection refused")

    client.connection.dial = dial  # type: ignore[method-assign, assignment]
    with pytest.raises(errors.ConnectionLost):
        client.connect()
    assert len(clock.sleeps) == 3 and clock.now < 1000.0 + 60


def test_follow_reconnect_waits_for_the_first_connection(clock: FakeClock) -> None:
    # A client that was closed before (or never connected) and a server not up yet.
    client = Client("127.0.0.1:1")
    client.close()
    dial = Dialer(5, b"OK\r\n" + records(1, [b"a", b"b"]))
    client.connection.dial = dial  # type: ignore[method-assign, assignment]
    seen: list[int] = []
    got = []
    for rec in client.follow(1, reconnect=True, on_reconnect=lambda n, exc: seen.append(n)):
        got.append(rec.id)
        if len(got) == 2:
            break
    assert got == [1, 2]
    assert seen == [1, 2, 3, 4, 5] and dial.calls == 6
    assert dial.sock is not None and dial.sock.sent == b"READ 2\r\n1 1\r\n1 0\r\n"
