"""The connection adapter (logd/server.py ``_Connection``) over a socketpair.

No Listener and no port: a connection needs only the five things a listener
gives it (queue, config, limits, stats, whether it is a unix socket). The log
is a MemoryLog, whose cursor yields memfd ranges, so READ goes through the
same sendfile path as on disk.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import gevent
import pytest
from gevent import socket

from logd import protocol as p
from logd import stats as st
from logd.config import FsyncPolicy, ServerConfig
from logd.events import EventQueue, Peer
from logd.log.memory import MemoryLog
from logd.protocol import encode_command
from logd.record import encode
from logd.server import _Connection


@dataclass
class Fixture:
    """What a _Connection reads from its Listener, and nothing else."""

    queue: EventQueue
    config: ServerConfig = field(default_factory=lambda: ServerConfig(send_timeout=5.0))
    limits: p.Limits = field(default_factory=p.Limits)
    is_unix: bool = True

    @property
    def stats(self) -> st.Stats:
        return self.queue.stats


@pytest.fixture
def listener() -> Iterator[Fixture]:
    queue = EventQueue(MemoryLog(), FsyncPolicy.parse("never"), st.Stats())
    queue.start()
    yield Fixture(queue)
    queue.stop()


def connect(listener: Fixture) -> tuple[socket.socket, gevent.Greenlet]:
    ours, theirs = socket.socketpair()
    conn = _Connection(listener, ours, Peer("unix", True))  # type: ignore[arg-type]
    return theirs, gevent.spawn(conn.run)


def recv_until(sock: socket.socket, end: bytes, timeout: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(end):
        left = deadline - time.monotonic()
        assert left > 0, f"no {end!r} after {data!r}"
        with gevent.Timeout(left, False):
            chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_msg_then_a_bounded_read(listener: Fixture) -> None:
    client, run = connect(listener)
    client.sendall(encode_command("MSG", b"hello", b"wor\r\nld") + encode_command("MSG", b"three"))
    assert recv_until(client, b"OK 3\r\n") == b"OK 2\r\nOK 3\r\n"
    client.sendall(encode_command("READ", 2, 2) + b"PING\r\n")
    assert recv_until(client, b"PONG\r\n") == (
        b"OK\r\n" + encode(2, b"wor\r\nld", 0) + encode(3, b"three") + b"+EOF\r\n" + p.PONG)
    client.close()
    run.join(timeout=5)
    assert run.dead and run.successful()


def test_a_tail_reader_gets_what_another_connection_writes(listener: Fixture) -> None:
    reader, reader_run = connect(listener)
    writer, writer_run = connect(listener)
    reader.sendall(encode_command("READ", 1))
    assert recv_until(reader, b"OK\r\n") == b"OK\r\n"
    assert listener.stats.tail_readers == 1
    writer.sendall(encode_command("MSG", b"a", b"b"))
    assert recv_until(writer, b"OK 2\r\n") == b"OK 2\r\n"
    assert recv_until(reader, encode(2, b"b")) == encode(1, b"a", 1) + encode(2, b"b")
    writer.sendall(encode_command("MSG", b"c"))
    assert recv_until(reader, encode(3, b"c")) == encode(3, b"c")
    reader.sendall(b"CLOSE\r\n")  # ends the follow: +EOF, then CLOSE's own OK
    assert recv_until(reader, b"+EOF\r\nOK\r\n") == b"+EOF\r\nOK\r\n"
    reader_run.join(timeout=5)
    writer.close()
    writer_run.join(timeout=5)
    assert reader_run.dead and writer_run.dead
    assert listener.stats.tail_readers == 0


def test_shutdown_ends_a_follow_with_its_line(listener: Fixture) -> None:
    reader, run = connect(listener)
    reader.sendall(encode_command("READ", 1))
    assert recv_until(reader, b"OK\r\n") == b"OK\r\n"
    listener.queue.drain(1.0)
    assert recv_until(reader, b"\r\n").startswith(b"ERR SHUTDOWN ")
    reader.close()
    run.join(timeout=5)
    assert run.dead
