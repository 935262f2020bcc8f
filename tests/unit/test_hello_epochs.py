"""Issue 10: the ``epochs`` field of both replication hellos (logd/protocol/replication.py),
encoded, decoded, and parsed whole, byte by byte and in random chunks."""

from __future__ import annotations

import msgpack
import pytest

from logd.protocol import NEED_DATA
from logd.protocol import replication as rp
from tests.chunkers import bytewise, random_chunks, whole

HISTORY = "1b4e28ba-2fa1-4d2a-883f-0016d3cca427"


def test_follower_hello_carries_epochs_and_omits_them_when_unknown() -> None:
    f = rp.FollowerHello(HISTORY, 9, 7, "x", ((1, 1), (3, 40)))
    assert msgpack.unpackb(rp.encode_follower_hello(f))["epochs"] == [[1, 1], [3, 40]]
    assert rp.decode_follower_hello(rp.encode_follower_hello(f)) == f
    old = rp.FollowerHello(None, 0, 0)
    assert "epochs" not in msgpack.unpackb(rp.encode_follower_hello(old))  # an older follower's bytes
    assert rp.decode_follower_hello(rp.encode_follower_hello(old)).epochs == ()


@pytest.mark.parametrize("chunker", [whole, bytewise, lambda d: random_chunks(d, 10, 7)])
def test_primary_hello_epochs_through_the_frame_parser(chunker) -> None:  # type: ignore[no-untyped-def]
    primary = rp.PrimaryHello(HISTORY, 7, 1, 1, 1, 0, 1, 1, epochs=((1, 1), (2, 5)))
    wire = rp.encode_hello_reply(primary) + rp.encode_head(7, 1, 0)
    parser = rp.FrameParser()
    events = []
    for chunk in chunker(wire):
        parser.receive_data(chunk)
        while (ev := parser.next_event()) is not NEED_DATA:
            events.append(ev)
    assert events == [primary, rp.HeadFrame(7, 1, 0)]
    old = rp.encode_hello_reply(rp.PrimaryHello(HISTORY, 7, 1, 1, 1, 0, 1, 1))
    assert "epochs" not in msgpack.unpackb(old[old.index(b"\r\n") + 2:-2])


@pytest.mark.parametrize("bad", [[[1]], [[2, 1], [1, 5]], [[1, 5], [2, 4]], [[0, 1]], "x",
                                 [[1, True]], [[1, 2**63]]])
def test_bad_epochs_are_refused(bad: object) -> None:
    raw = msgpack.packb({"history": None, "last_id": 0, "last_crc": 0, "epochs": bad})
    with pytest.raises(ValueError, match="'epochs': epochs must be a non-empty list"):
        rp.decode_follower_hello(raw)
