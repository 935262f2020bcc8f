"""The admin policy (logd/admin.py): who may send SHUTDOWN. Pure: addresses in, a verdict out."""

from __future__ import annotations

import random

import pytest

from logd import stats as st
from logd.admin import LOOPBACK, AdminPolicy, parse_networks
from logd.config import FsyncPolicy
from logd.errors import Forbidden
from logd.events import Handlers, Peer
from logd.log.memory import MemoryLog
from logd.protocol import Shutdown


def issue7_rule(host: str) -> bool:
    """The address-prefix test server.py made before the policy existed."""
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")


@pytest.mark.parametrize("host, trusted", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.255.254", True), ("::1", True),
    ("::ffff:127.0.0.1", True),
    ("::ffff:127.0.0.2", False),  # the old test did not accept it; kept (issue 10 may change the default)
    ("10.0.0.9", False), ("128.0.0.1", False), ("::2", False), ("fe80::1", False),
    ("not-an-address", False), ("", False),
])
def test_default_policy_is_the_issue7_rule(host: str, trusted: bool) -> None:
    assert AdminPolicy().trusts(host) is trusted
    assert issue7_rule(host) is trusted or host in ("not-an-address", "")


def test_default_policy_matches_the_old_rule_on_random_addresses() -> None:
    rng = random.Random(8)
    policy = AdminPolicy()
    hosts = [".".join(str(rng.choice([127, rng.randrange(256)])) if i == 0 else str(rng.randrange(256))
                      for i in range(4)) for _ in range(2000)]
    hosts += [f"::ffff:127.0.0.{rng.randrange(256)}" for _ in range(50)]
    hosts += [f"::{rng.randrange(1, 4)}" for _ in range(50)]
    assert any(issue7_rule(h) for h in hosts) and not all(issue7_rule(h) for h in hosts)
    for host in hosts:
        assert policy.trusts(host) is issue7_rule(host), host


def test_the_unix_socket_is_always_admin() -> None:
    assert AdminPolicy().trusts(None)
    assert AdminPolicy(allow_from=()).trusts(None)
    assert not AdminPolicy(allow_from=()).trusts("127.0.0.1")


def test_other_networks() -> None:
    policy = AdminPolicy(allow_from=("10.0.0.0/8", "2001:db8::/32", "192.0.2.7"))
    assert policy.trusts("10.1.2.3") and policy.trusts("2001:db8::5") and policy.trusts("192.0.2.7")
    assert not policy.trusts("127.0.0.1") and not policy.trusts("192.0.2.8")
    assert policy.who == "the unix socket or 10.0.0.0/8, 2001:db8::/32, 192.0.2.7"
    assert AdminPolicy().who == "loopback or the unix socket"
    assert AdminPolicy(allow_from=()).who == "the unix socket"


@pytest.mark.parametrize("value, parsed", [
    ("127.0.0.1", ("127.0.0.1",)),
    (" 10.0.0.0/8 , ::1 ", ("10.0.0.0/8", "::1")),
    ("none", ()), ("NONE", ()),
    (["10.0.0.1", "::1"], ("10.0.0.1", "::1")), ([], ()),
    (LOOPBACK, LOOPBACK),
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
