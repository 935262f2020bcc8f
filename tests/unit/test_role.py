"""REFUSE / ACCEPT and epochs (logd/events/role.py, the handlers) on a real FileLog,
called directly: no gevent loop, no sockets. The meta file is read back from disk."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from logd import stats as st
from logd.config import FsyncPolicy
from logd.errors import Forbidden, InvalidArgument, Refused
from logd.events import Handlers, Peer
from logd.events.handlers import WaitSync
from logd.log import meta as meta_mod
from logd.log.file import FileLog
from logd.protocol import Accept, Msg, Refuse, Replicate, Stats
from logd.protocol import replication as rp

ADMIN = Peer("unix", local=True)


def meta_on_disk(d: Path) -> dict:
    return json.loads((d / "meta").read_text())


@pytest.fixture
def handlers(tmp_path: Path):
    log = FileLog(str(tmp_path), fsync=False)
    yield Handlers(log, FsyncPolicy.parse("never"), st.Stats())
    log.close()


def test_refuse_persists_before_it_replies_and_msg_is_refused(handlers: Handlers, tmp_path: Path) -> None:
    handlers.handle(Msg((b"a", b"b")), ADMIN)
    reply = handlers.handle(Refuse(0, "10.0.0.2:1774"), ADMIN)
    assert reply == WaitSync(b"OK 2\r\n")
    doc = meta_on_disk(tmp_path)
    assert (doc["role"], doc["primary"], doc["epochs"]) == ("refusing", "10.0.0.2:1774", [[1, 1]])
    with pytest.raises(Refused) as info:
        handlers.handle(Msg((b"c",)), ADMIN)
    assert info.value.reason() == ("REFUSED this server refuses writes (REFUSE from unix); send writes "
                                   "to the new primary (primary=10.0.0.2:1774)")
    assert handlers.log.head() == 2
    # Idempotent: the same final id; a bare REFUSE keeps the named primary.
    assert handlers.handle(Refuse(), ADMIN) == WaitSync(b"OK 2\r\n")
    assert meta_on_disk(tmp_path)["primary"] == "10.0.0.2:1774"
    stats = handlers.collect_stats()
    assert (stats["role"], stats["epoch"], stats["new_primary"]) == ("refusing", 1, "10.0.0.2:1774")


def test_accept_starts_a_new_epoch_at_the_next_id(handlers: Handlers, tmp_path: Path) -> None:
    assert handlers.handle(Accept(), ADMIN) == b"OK already primary epoch=1 first=1\r\n"
    handlers.handle(Msg((b"a", b"b", b"c")), ADMIN)
    handlers.handle(Refuse(), ADMIN)
    assert handlers.handle(Accept(), ADMIN) == b"OK epoch=2 first=4\r\n"
    doc = meta_on_disk(tmp_path)
    assert (doc["role"], doc["epochs"], "primary" in doc) == ("primary", [[1, 1], [2, 4]], False)
    assert handlers.handle(Msg((b"d",)), ADMIN) == b"OK 4\r\n"
    assert handlers.handle(Accept(), ADMIN) == b"OK already primary epoch=2 first=4\r\n"
    # An epoch with nothing written in it: the next begins at the same id.
    handlers.handle(Refuse(), ADMIN)
    handlers.handle(Refuse(), ADMIN)
    assert handlers.handle(Accept(), ADMIN) == b"OK epoch=3 first=5\r\n"
    handlers.handle(Refuse(), ADMIN)
    assert handlers.handle(Accept(), ADMIN) == b"OK epoch=4 first=5\r\n"
    assert meta_on_disk(tmp_path)["epochs"] == [[1, 1], [2, 4], [3, 5], [4, 5]]
    assert handlers.collect_stats()["epochs"] == "1:1 2:4 3:5 4:5"


def test_a_reopened_refusing_directory_refuses(tmp_path: Path) -> None:
    log = FileLog(str(tmp_path), fsync=False)
    h = Handlers(log, FsyncPolicy.parse("never"), st.Stats())
    h.handle(Msg((b"a",)), ADMIN)
    h.handle(Refuse(0, "b:2"), ADMIN)
    log.close()
    log = FileLog(str(tmp_path), fsync=False)
    try:
        h = Handlers(log, FsyncPolicy.parse("never"), st.Stats())
        with pytest.raises(Refused) as info:
            h.handle(Msg((b"x",)), ADMIN)
        assert info.value.primary == "b:2"
        assert "a REFUSE before the last start" in info.value.message
        assert h.collect_stats()["role"] == "refusing"
        assert h.handle(Accept(), ADMIN) == b"OK epoch=2 first=2\r\n"
        assert h.handle(Msg((b"x",)), ADMIN) == b"OK 2\r\n"
    finally:
        log.close()


def test_partitions_other_than_0_and_non_admins_are_refused(handlers: Handlers, tmp_path: Path) -> None:
    before = (tmp_path / "meta").read_bytes()
    for cmd in (Refuse(2), Accept(1)):
        with pytest.raises(InvalidArgument, match="other than 0 is not supported"):
            handlers.handle(cmd, ADMIN)
        with pytest.raises(Forbidden):
            handlers.handle(cmd, Peer("127.0.0.2:9", local=False))
    assert (tmp_path / "meta").read_bytes() == before
    assert handlers.handle(Msg((b"a",)), ADMIN) == b"OK 1\r\n"


def test_a_follower_in_a_higher_epoch_makes_the_primary_refuse(handlers: Handlers, tmp_path: Path) -> None:
    handlers.handle(Msg((b"a",)), ADMIN)
    peer = Peer("10.0.0.5:4000", local=False)
    same = rp.encode_follower_hello(rp.FollowerHello(None, 0, 0, "f", ((1, 1),)))
    got = handlers.handle(Replicate(0, 0, 0, same), peer)
    assert got.follower.epochs == ((1, 1),)  # type: ignore[union-attr]
    assert msgpack.unpackb(got.hello[got.hello.index(b"\r\n") + 2:-2])["epochs"] == [[1, 1]]  # type: ignore[union-attr]
    higher = rp.encode_follower_hello(rp.FollowerHello(None, 0, 0, "f", ((1, 1), (2, 2))))
    with pytest.raises(Refused, match="in epoch 1 and the peer in epoch 2"):
        handlers.handle(Replicate(0, 0, 0, higher), peer)
    with pytest.raises(Refused, match=r"epoch 2 seen from 10.0.0.5:4000, above this server's 1"):
        handlers.handle(Msg((b"b",)), ADMIN)
    assert meta_on_disk(tmp_path)["role"] == "refusing"
    stats = handlers.collect_stats()
    assert (stats["role"], stats["higher_epoch_seen"]) == ("refusing", "2 from 10.0.0.5:4000")
    body = handlers.handle(Stats(), ADMIN)
    assert b"higher_epoch_seen: 2 from 10.0.0.5:4000\r\n" in body  # type: ignore[operator]


def test_meta_roles_and_epochs_round_trip() -> None:
    m = meta_mod.new(history="1b4e28ba-2fa1-4d2a-883f-0016d3cca427")
    r = meta_mod.with_role(m, "refusing", "h:1")
    assert meta_mod.decode(meta_mod.encode(r)) == r and r.primary == "h:1"
    assert b'"primary":' not in meta_mod.encode(meta_mod.with_role(r, "primary", "h:1"))
    e = meta_mod.with_epoch(r, 10)
    assert (e.role, e.epochs, e.epoch, e.primary) == ("primary", ((1, 1), (2, 10)), 2, "")
    assert meta_mod.decode(meta_mod.encode(e)) == e
    with pytest.raises(meta_mod.MetaError, match="primary 5 is not"):
        meta_mod.decode(meta_mod.encode(r).replace(b'"h:1"', b"5"))


@pytest.mark.parametrize("raw, want", [
    (b"REFUSE\r\n", Refuse(0, "")),
    (b"REFUSE 0 10.0.0.2:1774\r\n", Refuse(0, "10.0.0.2:1774")),
    (b"REFUSE 10.0.0.2:1774\r\n", Refuse(0, "10.0.0.2:1774")),
    (b"REFUSE 3 [::1]:1774\r\n", Refuse(3, "[::1]:1774")),
    (b"ACCEPT\r\n", Accept(0)),
])
def test_refuse_and_accept_parse(raw: bytes, want: object) -> None:
    from logd.protocol import CommandParser
    parser = CommandParser()
    parser.receive_data(raw)
    assert parser.next_command() == want


@pytest.mark.parametrize("raw, message", [
    (b"REFUSE 0 nohost\r\n", "new primary must be host:port"),
    (b"REFUSE 0 h:99999\r\n", "new primary must be host:port"),
    (b"REFUSE 0 :1\r\n", "new primary must be host:port"),
    (b"REFUSE 0 a:1 b:2\r\n", "usage: REFUSE [partition] [new-primary host:port]"),
    (b"AUTH\r\n", "usage: AUTH <token>"),
    (b"AUTH a b\r\n", "usage: AUTH <token>"),
])
def test_bad_refuse_and_auth_arguments(raw: bytes, message: str) -> None:
    from logd.protocol import CommandParser
    parser = CommandParser()
    parser.receive_data(raw)
    with pytest.raises(InvalidArgument, match=message.replace("[", r"\[")):
        parser.next_command()
    parser.receive_data(b"PING\r\n")
    assert type(parser.next_command()).__name__ == "Ping"  # the connection stays usable
