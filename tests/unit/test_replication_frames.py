"""The replication wire (logd/protocol/replication.py, commands.py): exact bytes
of every frame, and the one FrameParser fed whole, byte by byte and in random
chunks."""

from __future__ import annotations

import random

import msgpack
import pytest

from logd.errors import Diverged, NotRetained, ProtocolError, ShuttingDown
from logd.protocol import NEED_DATA, Ack, CommandParser, Replicate, encode_command
from logd.protocol import replication as rp
from logd.record import encode, encode_batch
from logd.errors import InvalidArgument

HELLO = rp.PrimaryHello("1b4e28ba-2fa1-4d2a-883f-0016d3cca427", 7, 1, 1, 1, 0, 1, 1)


def test_frame_bytes() -> None:
    assert rp.encode_data(3, 120, 45) == b"+DATA 3 120 45\r\n"
    assert rp.encode_next(4, 1001) == b"+NEXT 4 1001\r\n"
    assert rp.encode_head(1200, 4, 5000) == b"+HEAD 1200 4 5000\r\n"
    assert rp.encode_first(3, 901) == b"+FIRST 3 901\r\n"
    assert rp.encode_ack((4, 500, 1100), (4, 0, 1000)) == b"ACK 4 500 1100 4 0 1000\r\n"
    reply = rp.encode_hello_reply(HELLO)
    body = reply[reply.index(b"\r\n") + 2 : -2]
    assert reply == b"OK %d\r\n%s\r\n" % (len(body), body)
    assert msgpack.unpackb(body) == {
        "history": HELLO.history, "head": 7, "first_partition": 1, "first_id": 1, "partition": 1,
        "offset": 0, "next_id": 1, "partition_first_id": 1}


def test_follower_hello_round_trip_and_refusals() -> None:
    hello = rp.FollowerHello(None, 0, 0, "b")
    assert rp.decode_follower_hello(rp.encode_follower_hello(hello)) == hello
    hello = rp.FollowerHello(HELLO.history, 9, 0xDEADBEEF, "replica-1")
    assert rp.decode_follower_hello(rp.encode_follower_hello(hello)) == hello
    for bad in (b"\xc1", msgpack.packb([1]), msgpack.packb({"history": 5, "last_id": 0, "last_crc": 0}),
                msgpack.packb({"history": None, "last_id": -1, "last_crc": 0}),
                msgpack.packb({"history": None, "last_crc": 0})):
        with pytest.raises(ValueError):
            rp.decode_follower_hello(bad)


def test_replicate_and_ack_commands() -> None:
    hello = rp.encode_follower_hello(rp.FollowerHello(None, 0, 0))
    cases = {
        b"REPLICATE 0 0\r\n": Replicate(0, 0),
        b"REPLICATE 2 5 100\r\n": Replicate(2, 5, 100),
        encode_command("REPLICATE", 3, 0, 40, hello): Replicate(3, 0, 40, hello),
        b"ACK 1 2 3 4 5 6\r\n": Ack(1, 2, 3, 4, 5, 6),
    }
    for raw, want in cases.items():
        parser = CommandParser()
        parser.receive_data(raw)
        assert parser.next_command() == want
    for raw in (b"ACK 1 2 3\r\n", b"REPLICATE x 0\r\n", b"ACK 1 2 3 4 5 x\r\n",
                encode_command("REPLICATE", 1, 2, 3, b"h", b"extra")):
        parser = CommandParser()
        parser.receive_data(raw)
        with pytest.raises(InvalidArgument):
            parser.next_command()


def _stream() -> tuple[bytes, dict[int, bytes], list[object]]:
    """A replication reply: hello, two partitions of DATA, a heartbeat, EOF."""
    p1, _ = encode_batch(1, [b"a", b"bb", b"c\r\nc"])
    p1 += encode(4, b"x" * 300)
    p2, _ = encode_batch(5, [b"+DATA 1 2 3\r\n", b"e"])
    out = rp.encode_hello_reply(HELLO)
    out += rp.encode_data(1, 0, 40) + p1[:40] + rp.encode_data(1, 40, len(p1) - 40) + p1[40:]
    out += rp.encode_next(2, 5) + rp.encode_first(2, 5) + rp.encode_data(2, 0, len(p2)) + p2
    out += rp.encode_head(6, 2, len(p2)) + b"+EOF\r\n"
    frames = [HELLO, rp.Next(2, 5), rp.First(2, 5), rp.HeadFrame(6, 2, len(p2)), rp.End()]
    return out, {1: p1, 2: p2}, frames


def _feed(chunks: list[bytes]) -> tuple[dict[int, bytes], list[object]]:
    parser = rp.FrameParser()
    data: dict[int, bytearray] = {}
    frames: list[object] = []
    for chunk in chunks:
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, rp.Data):
                got = data.setdefault(event.partition, bytearray())
                assert event.offset == len(got)  # each chunk says where it belongs
                got += event.data
            else:
                frames.append(event)
    assert parser.buffered == 0
    return {k: bytes(v) for k, v in data.items()}, frames


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
def test_parser_whole_bytewise_random(how: str) -> None:
    raw, want_data, want_frames = _stream()
    if how == "whole":
        chunks = [raw]
    elif how == "bytes":
        chunks = [raw[i : i + 1] for i in range(len(raw))]
    else:
        rng = random.Random(9)
        chunks, i = [], 0
        while i < len(raw):
            n = rng.randint(1, 50)
            chunks.append(raw[i : i + n])
            i += n
    data, frames = _feed(chunks)
    assert data == want_data
    assert frames == want_frames


def test_data_final_marks_the_frame_end() -> None:
    parser = rp.FrameParser()
    parser.receive_data(rp.encode_hello_reply(HELLO) + rp.encode_data(1, 0, 4) + b"ab")
    assert parser.next_event() == HELLO
    assert parser.next_event() == rp.Data(1, 0, b"ab", final=False)
    assert parser.next_event() is NEED_DATA
    parser.receive_data(b"cd+EOF\r\n")
    assert parser.next_event() == rp.Data(1, 2, b"cd", final=True)
    assert parser.next_event() == rp.End()


def test_error_lines_become_their_errors() -> None:
    parser = rp.FrameParser()
    parser.receive_data(b"ERR_CLIENT NOTRETAINED partition 1 is no longer retained (first=50 head=90)\r\n")
    with pytest.raises(NotRetained) as info:
        parser.next_event()
    assert (info.value.first, info.value.head) == (50, 90)
    parser = rp.FrameParser()
    parser.receive_data(b"ERR_CLIENT DIVERGED history differs (partition=2 offset=10 id=7)\r\n")
    with pytest.raises(Diverged) as div:
        parser.next_event()
    assert (div.value.partition, div.value.offset, div.value.id) == (2, 10, 7)
    assert div.value.message == "history differs"
    parser = rp.FrameParser()
    parser.receive_data(rp.encode_hello_reply(HELLO) + b"ERR SHUTDOWN server is shutting down\r\n")
    parser.next_event()
    with pytest.raises(ShuttingDown):
        parser.next_event()


@pytest.mark.parametrize("bad", [
    b"+DATA 1 2\r\n", b"+DATA 1 2 0\r\n", b"+DATA 1 -2 3\r\n", b"+NEXT 1\r\n", b"+HEAD a b c\r\n", b"+FIRST 1\r\n",
    b"+WHAT\r\n", b"+EOF\n", b"+" + b"x" * 2000,
])
def test_malformed_frames(bad: bytes) -> None:
    parser = rp.FrameParser()
    parser.receive_data(rp.encode_hello_reply(HELLO) + bad)
    parser.next_event()
    with pytest.raises(ProtocolError):
        parser.next_event()


def test_hello_must_come_first_and_be_sane() -> None:
    for bad in (b"+EOF\r\n", b"OK 3\r\nabc\r\n", b"OK 1\r\n\x90XX"):
        parser = rp.FrameParser()
        parser.receive_data(bad)
        with pytest.raises(ProtocolError):
            parser.next_event()
