"""logd.client.connection.Connection over a real socketpair: the client's only I/O.

The peer end plays the server. Replies are written whole, a byte at a time
(each byte its own recv) and in random chunks. Blocking waits are bounded
by the connection's timeout; nothing sleeps.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Iterator

import pytest

from logd import errors
from logd.client.connection import Connection
from logd.protocol import Body, Eof, Ok, OkId, Pong
from logd.record import Record, encode
from tests.chunkers import Chunker, bytewise, seeded, whole

TIMEOUT = 5.0
CHUNKERS = [whole, bytewise, seeded(7, largest=40)]


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket]]:
    mine, peer = socket.socketpair()
    peer.settimeout(TIMEOUT)
    conn = Connection("127.0.0.1:1", timeout=TIMEOUT, sock=mine)
    yield conn, peer
    conn.close()
    peer.close()


STREAM = (
    b"OK 7\r\nPONG\r\nOK\r\n"
    + b"OK 3\r\nabc\r\n"
    + encode(1, b"one") + encode(2, b"a\r\nb") + b"+EOF\r\n"
)
CALLS = ["next_reply", "next_reply", "next_reply", "next_body", "next_record", "next_record", "next_record"]
EXPECTED = [OkId(7), Pong(), Ok(), Body(b"abc"), Record(1, b"one"), Record(2, b"a\r\nb"), Eof()]


class Drip(Connection):
    """A connection whose peer sends the next chunk only when a receive() is due,
    so each chunk arrives in a recv of its own."""

    def __init__(self, chunks: list[bytes], peer: socket.socket, sock: socket.socket) -> None:
        super().__init__("127.0.0.1:1", timeout=TIMEOUT, sock=sock)
        self.chunks = chunks
        self.peer = peer
        self.receives = 0

    def receive(self) -> None:
        self.receives += 1
        if self.chunks:
            self.peer.sendall(self.chunks.pop(0))
        super().receive()


@contextmanager
def dripping(stream: bytes, chunker: Chunker) -> Iterator[tuple[Drip, list[bytes]]]:
    """A Connection fed ``stream`` in ``chunker``'s chunks, one per receive."""
    mine, peer = socket.socketpair()
    chunks = list(chunker(stream))
    conn = Drip(list(chunks), peer, mine)
    try:
        yield conn, chunks
    finally:
        conn.close()
        peer.close()


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_replies_bodies_and_records_across_chunk_boundaries(chunker: Chunker) -> None:
    with dripping(STREAM, chunker) as (conn, chunks):
        assert [getattr(conn, c)() for c in CALLS] == EXPECTED
        assert conn.receives == len(chunks) and conn.buffered == 0


RUNS = encode(1, b"one") + encode(2, b"two") + encode(4, b"four") + encode(5, b"five") + b"+EOF\r\n"


@pytest.mark.parametrize("chunker", CHUNKERS)
def test_next_records_hands_out_runs_across_chunk_boundaries(chunker: Chunker) -> None:
    with dripping(RUNS, chunker) as (conn, chunks):
        runs = []
        for _ in range(len(chunks) + 2):  # bounded: at least one record per run
            run = conn.next_records()
            if isinstance(run, Eof):
                break
            assert run and [r.id for r in run] == list(range(run[0].id, run[0].id + len(run)))
            runs.append(run)
        assert [r for run in runs for r in run] == [
            Record(1, b"one"), Record(2, b"two"), Record(4, b"four"), Record(5, b"five")]
        assert not any(r[0].id == 4 and r[-1].id < 4 for r in runs)  # 2 -> 4 ends a run
        assert isinstance(run, Eof) and conn.buffered == 0


def test_close_empties_the_run_handed_out() -> None:
    mine, peer = socket.socketpair()
    conn = Drip([encode(1, b"a") + encode(2, b"b") + encode(3, b"c")], peer, mine)
    try:
        run = conn.next_records()
        assert isinstance(run, list) and len(run) == 3  # one send, one unix-socket receive
        got = []
        for rec in run:
            got.append(rec.id)
            conn.close()  # as another thread would: the rest of the run is not handed out
        assert got == [1] and run == []
        with pytest.raises(errors.ConnectionLost):
            conn.next_records()
    finally:
        conn.close()
        peer.close()


def test_blocking_calls_wait_for_the_rest(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(STREAM)
    assert [getattr(conn, c)() for c in CALLS] == EXPECTED


def test_send_reaches_the_peer(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    conn.send(b"PING\r\n")
    assert peer.recv(100) == b"PING\r\n"


def test_poll_reply_never_touches_the_socket(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(b"OK 1\r\nOK")
    conn.receive()
    assert conn.poll_reply() == OkId(1)
    assert type(conn.poll_reply()).__name__ == "NeedData"  # half a reply: no recv, no wait
    assert conn.connected and conn.buffered == 2


def test_error_reply_the_server_survives_keeps_the_connection(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(b"ERR_CLIENT BADREQUEST empty message not allowed\r\nPONG\r\n")
    with pytest.raises(errors.InvalidArgument):
        conn.next_reply()
    assert conn.connected
    assert conn.next_reply() == Pong()


@pytest.mark.parametrize("line", [b"ERR SHUTDOWN the server is stopping", b"WHAT"])
def test_fatal_reply_drops_the_connection_and_its_bytes(
    pair: tuple[Connection, socket.socket], line: bytes
) -> None:
    conn, peer = pair
    peer.sendall(line + b"\r\nPONG\r\n")
    with pytest.raises((errors.ShuttingDown, errors.ProtocolError)):
        conn.next_reply()
    assert not conn.connected and conn.buffered == 0
    with pytest.raises(errors.ConnectionLost):  # the PONG after it is not handed out
        conn.next_reply()


def test_expect_refuses_another_kind(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(b"PONG\r\nOK 3\r\n")
    with pytest.raises(errors.ProtocolError, match="HEAD: unexpected reply"):
        conn.expect(OkId, "HEAD")
    assert not conn.connected


def test_peer_close_is_connection_lost(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(b"OK")
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(errors.ConnectionLost, match="closed the connection"):
        conn.next_reply()
    assert not conn.connected


def test_timeout_is_connection_lost_from_the_oserror() -> None:
    mine, peer = socket.socketpair()
    conn = Connection("127.0.0.1:1", timeout=0.05, sock=mine)
    try:
        with pytest.raises(errors.ConnectionLost) as info:
            conn.next_record()
        assert isinstance(info.value.__cause__, TimeoutError)
        assert not conn.connected
    finally:
        peer.close()


def test_close_from_another_thread_wakes_a_blocked_receive(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    closes = conn.closes
    started = threading.Event()

    def closer() -> None:
        started.wait(TIMEOUT)
        conn.close()

    t = threading.Thread(target=closer)
    t.start()
    started.set()
    with pytest.raises(errors.ConnectionLost):
        conn.next_record()  # would wait TIMEOUT without the close
    t.join(TIMEOUT)
    assert conn.closes == closes + 1 and not conn.connected


def test_fileno_is_the_sockets_and_only_while_connected(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    assert conn.fileno() == conn._sock.fileno()  # type: ignore[union-attr]
    conn.drop()
    with pytest.raises(errors.ConnectionLost):
        conn.fileno()
    assert conn.closes == 0  # drop() is not close()


def test_wait_closed_returns_when_the_peer_closes(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(b"anything at all\r\n")
    peer.close()
    conn.wait_closed()
    assert not conn.connected


def test_wait_closed_is_bounded_by_the_timeout() -> None:
    mine, peer = socket.socketpair()
    conn = Connection("127.0.0.1:1", timeout=0.05, sock=mine)
    try:
        with pytest.raises(errors.ConnectionLost, match="did not close"):
            conn.wait_closed()
        assert not conn.connected
    finally:
        peer.close()


def test_send_connects_through_dial_and_checksum_errors_drop() -> None:
    mine, peer = socket.socketpair()
    conn = Connection("127.0.0.1:1", timeout=TIMEOUT)
    dials: list[int] = []

    def dial() -> socket.socket:
        dials.append(1)
        mine.settimeout(TIMEOUT)
        return mine

    conn.dial = dial  # type: ignore[method-assign]
    try:
        conn.send(b"READ 1 1\r\n")
        assert dials == [1] and peer.recv(100) == b"READ 1 1\r\n"
        bad = bytearray(encode(1, b"body"))
        bad[-3] ^= 1  # flip a body bit: the crc no longer matches
        peer.sendall(bytes(bad))
        with pytest.raises(errors.ChecksumError):
            conn.next_record()
        assert not conn.connected  # a ChecksumError is a ProtocolError: fatal
    finally:
        peer.close()
        conn.close()


def test_refused_dial_is_connection_lost_from_the_oserror() -> None:
    conn = Connection("127.0.0.1:1")

    def refuse() -> socket.socket:
        raise ConnectionRefusedError(111, "Connection refused")

    conn.dial = refuse  # type: ignore[method-assign]
    with pytest.raises(errors.ConnectionLost) as info:
        conn.send(b"PING\r\n")
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert "cannot connect to 127.0.0.1:1" in info.value.message
