"""Pure parts of structlog shipping (logd/ship.py) and of showing its bodies (logd/readout.py)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import msgpack
import pytest

from logd.clientcli import _format_json, _format_text
from logd.readout import fields_of, jsonable, logfmt
from logd.ship import DROPPED_EVENT, ShipBuffer, pack_event, to_msgpack


def unpack(body: bytes) -> Any:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


# -- value conversion -------------------------------------------------------------------


class Thing:
    def __str__(self) -> str:
        return "a thing"


class Broken:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_pack_event_keeps_keys_values_and_order() -> None:
    event = {"event": "paid", "level": "info", "amount": 12.5, "n": 3, "ok": True, "none": None,
             "tags": ["a", 1], "raw": b"\x00\xff", "nested": {"k": [1, {"x": "y"}]}}
    got = unpack(pack_event(event))
    assert got == {**event, "tags": ["a", 1]}
    assert list(got) == list(event)


def test_values_msgpack_cannot_hold_become_str() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    event = {"event": "e", "obj": Thing(), "big": 2**70, "neg": -(2**64), "set": {1}, "keys": {1: "one", (2, 3): "t"},
             "broken": Broken(), "tuple": (1, "x")}
    got = unpack(pack_event(event))
    assert got["obj"] == "a thing"
    assert got["big"] == str(2**70) and got["neg"] == str(-(2**64))
    assert got["set"] == "{1}"
    assert got["keys"] == {"1": "one", "(2, 3)": "t"}
    assert got["broken"] == "<unprintable Broken>"
    assert got["tuple"] == [1, "x"]
    deep = unpack(pack_event({"event": "e", "cyclic": cyclic}))["cyclic"]
    depth = 0
    while isinstance(deep, list):
        deep, depth = deep[0], depth + 1
    assert isinstance(deep, str) and depth == 31  # 32 levels with the event map: no RecursionError


def test_to_msgpack_leaves_plain_values_alone() -> None:
    for v in (None, True, 0, -(2**63), 2**64 - 1, 1.5, math.inf, "s", b"b"):
        assert to_msgpack(v) == v or (isinstance(v, float) and math.isnan(v))


# -- buffer: batching and drop accounting --------------------------------------------------


def bodies(n: int, start: int = 0) -> list[bytes]:
    return [pack_event({"event": "e", "i": i}) for i in range(start, start + n)]


def shown(batch: list[bytes]) -> list[Any]:
    out = []
    for b in batch:
        obj = unpack(b)
        out.append(obj["i"] if obj["event"] == "e" else obj)
    return out


def test_take_batches_by_count_and_bytes_in_order() -> None:
    buf = ShipBuffer(max_events=100)
    for b in bodies(10):
        assert buf.put(b)
    assert buf.ready(10, 10**6) and not buf.ready(11, 10**6)
    assert shown(buf.take(4, 10**6)) == [0, 1, 2, 3]
    size = len(bodies(1)[0])
    assert shown(buf.take(100, 2 * size)) == [4, 5]
    assert shown(buf.take(100, 1)) == [6]  # one body bigger than the limit goes alone
    assert shown(buf.take(100, 10**6)) == [7, 8, 9]
    assert buf.take(100, 10**6) == [] and buf.events == 0 and buf.bytes == 0


def test_drops_are_counted_and_reported_once_in_place() -> None:
    buf = ShipBuffer(max_events=3)
    kept = [buf.put(b) for b in bodies(5)]
    assert kept == [True, True, True, False, False]
    assert buf.dropped == 2
    assert shown(buf.take(2, 10**6)) == [0, 1]
    assert buf.put(bodies(1, 5)[0])  # room again
    batch = shown(buf.take(10, 10**6))
    assert batch == [2, {"event": DROPPED_EVENT, "level": "warning", "dropped": 2, "buffer_full": 2}, 5]
    assert buf.take(10, 10**6) == []  # reported once


def test_drop_reasons_and_too_big() -> None:
    buf = ShipBuffer(max_events=10, max_event=50)
    assert not buf.put(b"x" * 51)
    buf.drop("rejected", 7)
    assert buf.put(bodies(1)[0])
    assert shown(buf.take(10, 10**6)) == [
        {"event": DROPPED_EVENT, "level": "warning", "dropped": 8, "too_big": 1, "rejected": 7}, 0]
    assert buf.dropped == 8


def test_byte_bound() -> None:
    one = bodies(1)[0]
    buf = ShipBuffer(max_events=100, max_bytes=3 * len(one))
    assert [buf.put(b) for b in bodies(4)] == [True, True, True, False]
    assert buf.bytes == 3 * len(one)


def test_random_puts_and_takes_lose_nothing_unreported() -> None:
    rng = random.Random(3)
    buf = ShipBuffer(max_events=20)
    sent: list[Any] = []
    n = 0
    for _ in range(500):
        if rng.random() < 0.7:
            buf.put(bodies(1, n)[0])
            n += 1
        else:
            sent += shown(buf.take(rng.randrange(1, 8), 10**6))
    sent += shown(buf.take(10**6, 10**9))
    ids = [x for x in sent if isinstance(x, int)]
    reported = sum(x["dropped"] for x in sent if isinstance(x, dict))
    assert ids == sorted(ids) and len(ids) + reported == n == len(ids) + buf.dropped
    # Never two reports in a row: a run of drops is one event.
    assert not any(isinstance(a, dict) and isinstance(b, dict) for a, b in zip(sent, sent[1:]))


# -- showing structured bodies ---------------------------------------------------------------


MAP = msgpack.packb({"timestamp": "2026-12-02T00:00:00Z", "level": "info", "event": "paid",
                     "user": "ann lee", "n": 3, "ok": True, "raw": b"\xff", "nan": math.nan})


def test_fields_of_decodes_only_non_empty_maps_with_text_keys() -> None:
    got = fields_of(MAP)
    assert got is not None and math.isnan(got.pop("nan"))
    assert got == {k: v for k, v in unpack(MAP).items() if k != "nan"}
    for body in (msgpack.packb([1, 2]), msgpack.packb(5), msgpack.packb("text"), msgpack.packb({}),
                 msgpack.packb({1: "x"}), MAP + b"x", MAP[:-1], b"hello", b"\x80", b"",
                 b"\x81\xa1a\xc4\x01\xff"[:-1], b"\x81\xa2\xff\xfe\x01"):
        assert fields_of(body) is None, body
    assert fields_of(b"\x81\xa1a\x01") == {"a": 1}


def test_text_bodies_are_never_taken_for_maps() -> None:
    rng = random.Random(11)
    alphabet = "aé€ސ\U0001f600 \n{}"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 10)))
        assert fields_of(text.encode()) is None


def test_json_output_adds_fields_and_keeps_the_body() -> None:
    line = json.loads(_format_json(9, MAP))
    assert line["id"] == 9 and "body_base64" in line
    assert line["fields"] == {"timestamp": "2026-12-02T00:00:00Z", "level": "info", "event": "paid",
                              "user": "ann lee", "n": 3, "ok": True, "raw": "\\xff", "nan": "nan"}
    assert json.loads(_format_json(1, b"plain")) == {"id": 1, "body": "plain"}  # as before
    assert json.loads(_format_json(2, msgpack.packb([1]))) == {"id": 2, "body_base64": "kQE="}


def test_terminal_output_is_console_renderer_like() -> None:
    assert _format_text(9, MAP).decode() == (
        '9\t2026-12-02T00:00:00Z [info] paid user="ann lee" n=3 ok=true raw=\\xff nan="nan"\n')
    odd = msgpack.packb({"event": "a b", "q": 'say "hi"', "nl": "x\ny", "e": "", "esc": "\x1b[31m", "l": [1, None]})
    assert _format_text(1, odd).decode() == (
        '1\t"a b" q="say \\"hi\\"" nl=x\\ny e="" esc=\\x1b[31m l=[1, null]\n')
    assert _format_text(3, b"plain text").decode() == "3\tplain text\n"  # as before


def test_logfmt_without_lead_keys_and_jsonable() -> None:
    assert logfmt({"a": 1, "level": 5}, lambda s: s) == "a=1 level=5"
    assert jsonable({"t": (1, b"x"), 2: math.inf}) == {"t": [1, "x"], "2": "inf"}


@pytest.mark.parametrize("body", [MAP, msgpack.packb({"event": "x\u009b"})])
def test_terminal_output_has_no_control_characters(body: bytes) -> None:
    text = _format_text(1, body).decode()[:-1]
    assert all(0x20 <= ord(ch) != 0x7F and not 0x80 <= ord(ch) < 0xA0 for ch in text.split("\t", 1)[1])
