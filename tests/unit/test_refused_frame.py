"""The ``+REFUSED <final id> <new primary or ->`` frame (issue 10, the planned
failover's fence) and the hello's ``advertise``: exact bytes, and FrameParser
fed whole, byte by byte and in random chunks."""

from __future__ import annotations

import random

import msgpack
import pytest

from logd.errors import ProtocolError
from logd.protocol import NEED_DATA
from logd.protocol import replication as rp
from logd.record import encode_batch

HELLO = rp.PrimaryHello("1b4e28ba-2fa1-4d2a-883f-0016d3cca427", 3, 1, 1, 1, 0, 1, 1, ((1, 1),))


def test_refused_bytes() -> None:
    assert rp.encode_refused(75, "10.1.2.3:1774") == b"+REFUSED 75 10.1.2.3:1774\r\n"
    assert rp.encode_refused(0, "") == b"+REFUSED 0 -\r\n"
    assert rp.encode_refused(9, "[::1]:1774") == b"+REFUSED 9 [::1]:1774\r\n"
    for bad in ("a b", "x" * 201, "caf\u00e9:1", "a\tb"):
        with pytest.raises(ValueError):
            rp.encode_refused(1, bad)


def _stream() -> tuple[bytes, bytes, list[object]]:
    records, _ = encode_batch(1, [b"a", b"+REFUSED 1 -\r\n", b"c"])
    raw = rp.encode_hello_reply(HELLO) + rp.encode_data(1, 0, len(records)) + records
    raw += rp.encode_head(3, 1, len(records)) + rp.encode_refused(3, "127.0.0.1:4000")
    return raw, records, [HELLO, rp.HeadFrame(3, 1, len(records)), rp.RefusedFrame(3, "127.0.0.1:4000")]


def _chunks(raw: bytes, how: str) -> list[bytes]:
    if how == "whole":
        return [raw]
    if how == "bytes":
        return [raw[i : i + 1] for i in range(len(raw))]
    rng, out, i = random.Random(10), [], 0
    while i < len(raw):
        n = rng.randint(1, 17)
        out.append(raw[i : i + n])
        i += n
    return out


@pytest.mark.parametrize("how", ["whole", "bytes", "random"])
def test_parser_gives_the_refused_frame_after_the_data(how: str) -> None:
    raw, want_data, want_frames = _stream()
    parser = rp.FrameParser()
    data, frames = bytearray(), []
    for chunk in _chunks(raw, how):
        parser.receive_data(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            if isinstance(event, rp.Data):
                data += event.data
            else:
                frames.append(event)
    assert (bytes(data), frames, parser.buffered) == (want_data, want_frames, 0)


def test_no_new_primary_is_a_dash() -> None:
    parser = rp.FrameParser()
    parser.receive_data(rp.encode_hello_reply(HELLO) + b"+REFUSED 12 -\r\n")
    parser.next_event()
    assert parser.next_event() == rp.RefusedFrame(12, "")


@pytest.mark.parametrize("bad", [
    b"+REFUSED\r\n", b"+REFUSED 12\r\n", b"+REFUSED x h:1\r\n", b"+REFUSED 1 h:1 extra\r\n",
    b"+REFUSED -1 h:1\r\n", b"+REFUSED 1 \r\n", b"+REFUSED 1 h\x01:1\r\n", b"+REFUSED 1 -\n",
])
def test_malformed_refused(bad: bytes) -> None:
    parser = rp.FrameParser()
    parser.receive_data(rp.encode_hello_reply(HELLO) + bad)
    parser.next_event()
    with pytest.raises(ProtocolError):
        parser.next_event()


def test_hello_advertise_only_when_given_and_checked() -> None:
    plain = rp.FollowerHello(None, 4, 7, "b", ((1, 1),), "always")
    assert "advertise" not in msgpack.unpackb(rp.encode_follower_hello(plain))
    named = rp.FollowerHello(None, 4, 7, "b", ((1, 1),), "always", "127.0.0.1:4000")
    raw = rp.encode_follower_hello(named)
    assert msgpack.unpackb(raw)["advertise"] == "127.0.0.1:4000"
    assert rp.decode_follower_hello(raw) == named
    long = msgpack.packb({"history": None, "last_id": 0, "last_crc": 0, "advertise": "a" * 300})
    assert rp.decode_follower_hello(long).advertise == "a" * 200
    with pytest.raises(ValueError, match="advertise"):
        rp.decode_follower_hello(msgpack.packb({"history": None, "last_id": 0, "last_crc": 0, "advertise": 5}))
