"""The admin policy (logd/admin.py): who may send SHUTDOWN. Pure: addresses in, a verdict out."""

from __future__ import annotations

import random

import pytest

from logd import stats as st
from logd.admin import DEFAULT_ADMIN_FROM, AdminPolicy, parse_networks
from logd.config import FsyncPolicy
from logd.errors import Forbidden
from logd.events import Handlers, Peer
from logd.log.memory import MemoryLog
from logd.admin import load_token
from logd.errors import InvalidArgument
from logd.events.handlers import ADMIN_REFUSED, AUTH_FAILURES
from logd.protocol import Accept, Auth, Refuse, Shutdown


@pytest.mark.parametrize("host, trusted", [
    ("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True),
    # issue 10: other loopback addresses are not admin by default
    ("127.0.0.2", False), ("127.255.255.254", False), ("::ffff:127.0.0.2", False),
    ("10.0.0.9", False), ("128.0.0.1", False), ("::2", False), ("fe80::1", False),
    ("not-an-address", False), ("", False),
])
def test_default_policy_is_127_0_0_1_and_ipv6_loopback(host: str, trusted: bool) -> None:
    assert AdminPolicy().trusts(host) is trusted


def test_default_policy_on_random_addresses() -> None:
    rng = random.Random(8)
    policy = AdminPolicy()
    hosts = [f"127.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(2000)]
    for host in hosts:
        assert policy.trusts(host) is (host == "127.0.0.1"), host


def test_the_unix_socket_is_always_admin() -> None:
    assert AdminPolicy().trusts(None)
    assert AdminPolicy(allow_from=()).trusts(None)
    assert not AdminPolicy(allow_from=()).trusts("127.0.0.1")


def test_other_networks() -> None:
    policy = AdminPolicy(allow_from=("10.0.0.0/8", "2001:db8::/32", "192.0.2.7"))
    assert policy.trusts("10.1.2.3") and policy.trusts("2001:db8::5") and policy.trusts("192.0.2.7")
    assert not policy.trusts("127.0.0.1") and not policy.trusts("192.0.2.8")
    assert policy.who == "the unix socket or 10.0.0.0/8, 2001:db8::/32, 192.0.2.7"
    assert AdminPolicy().who == "127.0.0.1, ::1 or the unix socket"
    assert AdminPolicy(token="t").who == "127.0.0.1, ::1 or the unix socket, or after AUTH with the admin token"
    assert AdminPolicy(allow_from=()).who == "the unix socket"


@pytest.mark.parametrize("value, parsed", [
    ("127.0.0.1", ("127.0.0.1",)),
    (" 10.0.0.0/8 , ::1 ", ("10.0.0.0/8", "::1")),
    ("none", ()), ("NONE", ()),
    (["10.0.0.1", "::1"], ("10.0.0.1", "::1")), ([], ()),
    (DEFAULT_ADMIN_FROM, DEFAULT_ADMIN_FROM),
])
def test_parse_networks(value: object, parsed: tuple[str, ...]) -> None:
    assert parse_networks(value) == parsed


@pytest.mark.parametrize("value, message", [
    ("localhost", "not an address or network: 'localhost' (use e.g. 127.0.0.1, 10.0.0.0/8, ::1)"),
    ("10.0.0.0/33", "not an address or network: '10.0.0.0/33'"),
    ("", "not an address or network: ''"),
    (5, 'must be addresses or networks such as "127.0.0.1,::1", not 5'),
    ([1], 'must be addresses or networks such as "127.0.0.1,::1", not [1]'),
])
def test_parse_networks_refuses(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_networks(value)
    assert str(info.value).startswith(message)


def test_the_shutdown_handler_asks_the_policy() -> None:
    calls: list[int] = []
    handlers = Handlers(MemoryLog(), FsyncPolicy.parse("never"), st.Stats(), on_shutdown=lambda: calls.append(1),
                        admin=AdminPolicy(allow_from=("10.0.0.0/8",)))
    with pytest.raises(Forbidden) as info:
        handlers.handle(Shutdown(), Peer("127.0.0.1:5000", local=False))
    assert str(info.value) == "SHUTDOWN is accepted only from the unix socket or 10.0.0.0/8"
    assert calls == []
    handlers.handle(Shutdown(), Peer("10.0.0.1:5000", local=True))
    assert calls == [1]



def test_the_token_lets_a_peer_in_after_auth_and_wrong_tokens_are_counted() -> None:
    calls: list[int] = []
    stats = st.Stats()
    handlers = Handlers(MemoryLog(), FsyncPolicy.parse("never"), stats, on_shutdown=lambda: calls.append(1),
                        admin=AdminPolicy(token="s3cret"))
    peer = Peer("127.0.0.2:5000", local=False)
    for cmd in (Shutdown(), Refuse(), Accept()):
        with pytest.raises(Forbidden) as info:
            handlers.handle(cmd, peer)
        assert str(info.value).endswith("or after AUTH with the admin token")
    assert stats.counters[ADMIN_REFUSED] == 3
    for wrong in (b"s3cre", b"s3cret!", b"S3CRET"):
        with pytest.raises(Forbidden, match="wrong admin token"):
            handlers.handle(Auth(wrong), peer)
    assert stats.counters[AUTH_FAILURES] == 3 and not peer.authenticated
    assert handlers.handle(Auth(b"s3cret"), peer) == b"OK\r\n"
    assert peer.authenticated
    handlers.handle(Shutdown(), peer)
    assert calls == [1]
    other = Peer("127.0.0.2:5001", local=False)  # AUTH is per connection
    with pytest.raises(Forbidden):
        handlers.handle(Shutdown(), other)
    data = handlers.collect_stats()
    assert (data[ADMIN_REFUSED], data[AUTH_FAILURES]) == (4, 3)


def test_auth_without_a_configured_token_is_an_error() -> None:
    handlers = Handlers(MemoryLog(), FsyncPolicy.parse("never"), st.Stats())
    with pytest.raises(InvalidArgument, match="no admin token is configured"):
        handlers.handle(Auth(b"x"), Peer("127.0.0.1:1", local=True))


def test_load_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert load_token(None, None) is None
    assert load_token("abc", None) == "abc"
    f = tmp_path / "token"
    f.write_text("  tok-1  \nignored\n")
    assert load_token(None, str(f)) == "tok-1"
    with pytest.raises(ValueError, match="not both"):
        load_token("abc", str(f))
    f.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        load_token(None, str(f))
    with pytest.raises(ValueError, match="cannot read admin token file"):
        load_token(None, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="one word"):
        load_token("a b", None)
