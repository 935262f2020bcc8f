"""Handlers (logd/events/handlers.py) on a MemoryLog: plain calls, no gevent loop.

``Server`` joins the pure pieces the way a connection does: request bytes
through ``CommandParser``, the command through ``Handlers``, errors through
``encode_error``; replies are read back with ``ReplyParser``.
"""

from __future__ import annotations

import msgpack
import pytest

from logd import stats as st
from logd.config import FsyncPolicy
from logd.errors import (
    ClientError,
    Forbidden,
    InvalidArgument,
    LogdError,
    NotRetained,
    OutOfRange,
    ShuttingDown,
)
from logd.events import CloseAfter, Handlers, Peer, Stream, WaitCommit
from logd.events.handlers import WaitSync
from logd.log.memory import MemoryLog
from logd.protocol import (
    NEED_DATA,
    OK,
    PONG,
    Body,
    CommandParser,
    Msg,
    OkId,
    Read,
    ReplyParser,
    encode_command,
    encode_error,
)

LOCAL = Peer("127.0.0.1:5000", local=True)
REMOTE = Peer("10.0.0.9:5000", local=False)


def make(policy: str = "never") -> tuple[Handlers, MemoryLog]:
    log = MemoryLog()
    return Handlers(log, FsyncPolicy.parse(policy), st.Stats()), log


class Server:
    def __init__(self, handlers: Handlers, peer: Peer = LOCAL) -> None:
        self.handlers = handlers
        self.peer = peer
        self.parser = CommandParser()

    def request(self, data: bytes) -> object:
        """One request's reply: bytes, or a Stream/WaitCommit/CloseAfter."""
        self.parser.receive_data(data)
        try:
            cmd = self.parser.next_command()
            assert cmd is not NEED_DATA
            return self.handlers.handle(cmd, self.peer)  # type: ignore[arg-type]
        except LogdError as exc:
            return encode_error(exc)


def raises_reply(data: bytes, cls: type) -> LogdError:
    parser = ReplyParser()
    parser.receive_data(data)
    with pytest.raises(cls) as info:
        parser.next_reply()
    return info.value


def test_msg_replies_with_the_last_id() -> None:
    handlers, log = make()
    server = Server(handlers)
    assert server.request(encode_command("MSG", b"a")) == b"OK 1\r\n"
    assert server.request(encode_command("MSG", b"b", b"c\r\n", bytes(range(256)))) == b"OK 4\r\n"
    assert [r.body for r in log.read(1, 5)] == [b"a", b"b", b"c\r\n", bytes(range(256))]
    assert handlers.stats.counters[st.MESSAGES_WRITTEN] == 4


def test_msg_under_fsync_always_waits_for_commit() -> None:
    handlers, log = make("always")
    reply = handlers.handle(Msg((b"a", b"b")), LOCAL)
    assert reply == WaitCommit(2, b"OK 2\r\n")
    # HEAD waits as well while the head is not durable...
    assert handlers.handle(Msg((b"c",)), LOCAL) == WaitCommit(3, b"OK 3\r\n")
    assert Server(handlers).request(b"HEAD\r\n") == WaitCommit(3, b"OK 3\r\n")
    point = log.begin_sync()
    point.run()
    log.end_sync(point)
    # ...and not once it is.
    assert Server(handlers).request(b"HEAD\r\n") == b"OK 3\r\n"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"MSG 1\r\n0 \r\n",
        b"MSG 3\r\n1 a\r\n0 \r\n1 c\r\n",
        b"MSG 0\r\n",
        b"MSG\r\n",
    ],
)
def test_empty_message_is_rejected_and_nothing_written(request_bytes: bytes) -> None:
    handlers, log = make()
    server = Server(handlers)
    reply = server.request(request_bytes)
    assert isinstance(reply, bytes) and reply.startswith(b"ERR_CLIENT BADREQUEST ")
    raises_reply(reply, ClientError)
    assert log.head() == 0
    assert server.request(b"PING\r\n") == PONG
    assert server.request(encode_command("MSG", b"ok")) == b"OK 1\r\n"


def test_msg_while_stopping_is_refused() -> None:
    handlers, log = make()
    handlers.stopping = True
    with pytest.raises(ShuttingDown):
        handlers.handle(Msg((b"a",)), LOCAL)
    assert log.head() == 0


def test_read_range_validation() -> None:
    handlers, log = make()
    server = Server(handlers)
    # Empty log: 1 (= head+1) is fine, 0 means the first id, 2 is past head+1.
    assert server.request(encode_command("READ", 1)) == Stream(1, 0)
    assert server.request(encode_command("READ", 0, 5)) == Stream(1, 5)
    err = raises_reply(server.request(encode_command("READ", 2)), OutOfRange)  # type: ignore[arg-type]
    assert (err.first, err.head) == (1, 0)  # type: ignore[attr-defined]
    log.append([b"a", b"b", b"c"])
    assert server.request(encode_command("READ", 0)) == Stream(1, 0)
    assert server.request(encode_command("READ", 1, 2)) == Stream(1, 2)
    assert server.request(encode_command("READ", 3)) == Stream(3, 0)
    assert server.request(encode_command("READ", 4, 1)) == Stream(4, 1)
    reply = server.request(encode_command("READ", 5))
    assert isinstance(reply, bytes) and reply.startswith(b"ERR_CLIENT RANGE ")
    err = raises_reply(reply, OutOfRange)
    assert type(err) is OutOfRange and (err.first, err.head) == (1, 3)  # type: ignore[attr-defined]
    with pytest.raises(OutOfRange):
        handlers.handle(Read(10**18), LOCAL)


class RetainedLog(MemoryLog):
    """A log whose ids before 5 were deleted (retention), as Handlers sees it."""

    def first_id(self) -> int:
        return 5

    def head(self) -> int:
        return 9


def test_read_below_the_first_retained_id() -> None:
    handlers = Handlers(RetainedLog(), FsyncPolicy.parse("never"), st.Stats())
    assert handlers.handle(Read(0), LOCAL) == Stream(5, 0)
    assert handlers.handle(Read(5), LOCAL) == Stream(5, 0)
    assert handlers.handle(Read(10), LOCAL) == Stream(10, 0)
    with pytest.raises(NotRetained) as info:
        handlers.handle(Read(4), LOCAL)
    assert (info.value.first, info.value.head) == (5, 9)
    with pytest.raises(OutOfRange) as info2:
        handlers.handle(Read(11), LOCAL)
    assert type(info2.value) is OutOfRange and (info2.value.first, info2.value.head) == (5, 9)


def test_head_and_ping() -> None:
    handlers, log = make()
    server = Server(handlers)
    assert server.request(b"HEAD\r\n") == b"OK 0\r\n"
    log.append([b"a", b"b"])
    assert server.request(b"head 0\r\n") == b"OK 2\r\n"
    assert server.request(b"PING\r\n") == PONG
    parser = ReplyParser()
    parser.receive_data(b"OK 2\r\n")
    assert parser.next_reply() == OkId(2)


def test_close() -> None:
    handlers, _ = make()
    assert Server(handlers).request(b"CLOSE\r\n") == CloseAfter(OK)


def test_shutdown_only_from_a_local_peer() -> None:
    calls = []
    handlers = Handlers(MemoryLog(), FsyncPolicy.parse("never"), st.Stats(), on_shutdown=lambda: calls.append(1))
    reply = Server(handlers, REMOTE).request(b"SHUTDOWN\r\n")
    assert isinstance(reply, bytes) and reply.startswith(b"ERR_CLIENT FORBIDDEN ")
    raises_reply(reply, Forbidden)
    assert calls == []
    assert Server(handlers, LOCAL).request(b"SHUTDOWN\r\n") == OK
    assert calls == [1]


def body_of(reply: object) -> bytes:
    assert isinstance(reply, bytes)
    parser = ReplyParser()
    parser.receive_data(reply)
    got = parser.next_body()
    assert isinstance(got, Body) and parser.buffered == 0
    return got.data


def test_stats_text_and_msgpack() -> None:
    handlers, log = make()
    log.append([b"a", b"b", b"c"])
    server = Server(handlers)
    text = body_of(server.request(b"STATS\r\n")).decode()
    lines = dict(line.split(": ", 1) for line in text.split("\r\n") if line)
    assert lines["head"] == "3" and lines["first_id"] == "1"
    assert lines["fsync_policy"] == "never"
    assert body_of(server.request(encode_command("STATS", "text"))).decode().startswith("head: 3\r\n")
    data = msgpack.unpackb(body_of(server.request(encode_command("STATS", "msgpack"))))
    assert data["head"] == 3 and data["first_id"] == 1
    assert set(data) == set(lines)


def test_stats_bad_format_is_a_client_error() -> None:
    handlers, _ = make()
    reply = Server(handlers).request(encode_command("STATS", "json"))
    raises_reply(reply, ClientError)  # type: ignore[arg-type]
    assert isinstance(reply, bytes) and reply.startswith(b"ERR_CLIENT BADREQUEST")


def test_refuse_and_accept_on_a_memory_log() -> None:
    handlers, _ = make()
    server = Server(handlers)
    assert server.request(b"MSG a\r\n") == b"OK 1\r\n"
    assert server.request(b"REFUSE\r\n") == WaitSync(b"OK 1\r\n")
    reply = server.request(b"MSG b\r\n")
    assert isinstance(reply, bytes) and reply.startswith(b"ERR_CLIENT REFUSED this server refuses writes")
    assert server.request(b"ACCEPT\r\n") == b"OK epoch=0 first=2\r\n"  # no meta: no epochs
    assert server.request(b"MSG b\r\n") == b"OK 2\r\n"
    assert server.request(b"PING\r\n") == PONG


def test_replicate_needs_a_data_directory() -> None:
    handlers, _ = make()
    reply = Server(handlers).request(encode_command("REPLICATE", 1))
    assert reply == b"ERR_CLIENT UNKNOWN REPLICATE needs a log in a data directory\r\n"


def test_invalid_argument_reply_code() -> None:
    assert encode_error(InvalidArgument("x")) == b"ERR_CLIENT BADREQUEST x\r\n"
