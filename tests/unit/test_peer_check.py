"""The unclean-restart peer check's parts: the hello's ``advertise``, the meta
file's ``followers``, recording them (handlers/role), ``--peer`` parsing and
the pure rule (logd/peers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logd import peers
from logd import stats as st
from logd.config import ConfigError, FsyncPolicy, load, parse_addresses
from logd.events import Handlers, Peer
from logd.log import meta
from logd.log.file import FileLog
from logd.log.meta import Meta, MetaError
from logd.protocol import NEED_DATA, Msg, Refuse, Replicate, encode_command
from logd.protocol import replication as rp
from logd.protocol.commands import CommandParser
from tests.chunkers import bytewise, random_chunks, whole

HISTORY = "1b4e28ba-2fa1-4d2a-883f-0016d3cca427"
ADMIN = Peer("unix", local=True)


# -- the hello's advertise, through the command parser (encode/decode: test_refused_frame.py) --


@pytest.mark.parametrize("chunker", [whole, bytewise, lambda d: random_chunks(d, 10, 7)])
def test_advertise_through_the_command_parser(chunker) -> None:  # type: ignore[no-untyped-def]
    hello = rp.FollowerHello(None, 0, 0, "f", advertise="[::1]:1774")
    parser = CommandParser()
    got = []
    for chunk in chunker(encode_command("REPLICATE", 0, 0, 0, rp.encode_follower_hello(hello))):
        parser.receive_data(chunk)
        while (ev := parser.next_command()) is not NEED_DATA:
            got.append(ev)
    assert len(got) == 1 and isinstance(got[0], Replicate)
    assert rp.decode_follower_hello(got[0].hello) == hello


# -- the meta file's followers ------------------------------------------------------------


BASE = Meta(1, HISTORY, "2026-12-01T22:30:00Z", "primary", ((1, 1),))


def test_followers_are_kept_newest_last_bounded_and_through_role_changes() -> None:
    m = meta.with_follower(meta.with_follower(BASE, "a:1"), "b:2")
    assert m.followers == ("a:1", "b:2")
    assert meta.with_follower(m, "a:1").followers == ("b:2", "a:1")
    line = meta.encode(m)
    assert json.loads(line)["followers"] == ["a:1", "b:2"] and meta.decode(line) == m
    assert "followers" not in json.loads(meta.encode(BASE))  # the documented line, unchanged
    many = BASE
    for i in range(meta.MAX_FOLLOWERS + 3):
        many = meta.with_follower(many, f"h{i}:1")
    assert many.followers == tuple(f"h{i}:1" for i in range(3, meta.MAX_FOLLOWERS + 3))
    assert meta.with_role(m, "refusing", "b:2").followers == m.followers
    assert meta.with_epoch(m, 5).followers == m.followers


@pytest.mark.parametrize("bad", ["a:1", [1], [""], ["a:1"] * (meta.MAX_FOLLOWERS + 1)])
def test_bad_followers_are_refused(bad: object) -> None:
    doc = json.loads(meta.encode(BASE))
    doc["followers"] = bad
    with pytest.raises(MetaError, match="followers .* is not a list of at most"):
        meta.decode(json.dumps(doc).encode())


def test_replicate_with_advertise_records_it_once(tmp_path: Path) -> None:
    log = FileLog(str(tmp_path), fsync=False)
    try:
        h = Handlers(log, FsyncPolicy.parse("never"), st.Stats())
        h.handle(Msg((b"a",)), ADMIN)
        hello = rp.encode_follower_hello(rp.FollowerHello(None, 0, 0, "f", advertise="10.0.0.2:1774"))
        h.handle(Replicate(0, 0, 0, hello), ADMIN)
        doc = json.loads((tmp_path / "meta").read_text())
        assert doc["followers"] == ["10.0.0.2:1774"]
        mtime = (tmp_path / "meta").stat().st_mtime_ns
        h.handle(Replicate(0, 0, 0, hello), ADMIN)  # known: the file is not rewritten
        assert (tmp_path / "meta").stat().st_mtime_ns == mtime
        h.handle(Replicate(0, 0, 0, rp.encode_follower_hello(rp.FollowerHello(None, 0, 0))), ADMIN)
        h.handle(Refuse(0, "10.0.0.2:1774"), ADMIN)
        doc = json.loads((tmp_path / "meta").read_text())
        assert (doc["followers"], doc["role"]) == (["10.0.0.2:1774"], "refusing")
    finally:
        log.close()


# -- --peer ----------------------------------------------------------------------------


def test_peer_addresses_parse_from_lists_commas_and_repeats(tmp_path: Path) -> None:
    assert parse_addresses("a:1, b:2,a:1") == ("a:1", "b:2")
    assert parse_addresses(["a:1", "c:3,[::1]:4"]) == ("a:1", "c:3", "[::1]:4")
    assert parse_addresses("none") == parse_addresses("") == ()
    for bad in ("a", "off", "a:99999", 7):
        with pytest.raises(ValueError):
            parse_addresses(bad)
    with pytest.raises(ConfigError, match=r"--peer: must be HOST:PORT addresses \(such as 10.0.0.2:1774 or \[::1\]:1774\), comma-separated, not 'nope'"):
        load(None, {"peer": ["nope"]})
    assert load(None, {"peer": ["a:1", "b:2"]}).peer == ("a:1", "b:2")


# -- the rule ----------------------------------------------------------------------------


def test_a_higher_epoch_refuses_naming_the_peer_or_the_primary_it_names() -> None:
    answers = [peers.Answer("b:1", "primary", 2), peers.Answer("c:1", "replica", 3, "d:1"),
               peers.Answer("e:1", error="refused")]
    v = peers.decide(1, answers, 3)
    assert (v.refuse, v.new_primary, v.higher) == (True, "d:1", answers[1])
    assert v.reason == ("unclean restart: peer c:1 is replica in epoch 3, above this server's 1; "
                        "the new primary is d:1")
    v = peers.decide(1, answers[:1], 3)
    assert (v.refuse, v.new_primary) == (True, "b:1")


def test_no_answer_refuses_and_any_answer_in_our_epoch_passes() -> None:
    down = [peers.no_answer("b:1", 3), peers.Answer("c:1", error="connection refused")]
    v = peers.decide(2, down, 3)
    assert (v.refuse, v.new_primary, v.higher) == (True, "", None)
    assert v.reason == ("unclean restart: no peer answered within 3s (b:1: no answer within 3s; c:1: "
                        "connection refused); an operator must ACCEPT (logd accept) once sure no "
                        "other server was promoted")
    assert peers.decide(2, [*down, peers.Answer("d:1", "replica", 2)], 3) == peers.Verdict(False, "", "")
    assert peers.decide(2, [], 3).refuse is False
