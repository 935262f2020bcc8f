"""Who may send admin commands (SHUTDOWN today; REFUSE/ACCEPT later): pure code the handlers ask.

The rule is issue 7's, unchanged: the unix socket always; over TCP, a peer
whose address is in ``allow_from`` (the ``admin_from`` setting). Its default,
``LOOPBACK``, is what the address-prefix test in ``server.py`` accepted: any
127.x.y.z, ``::1`` and the IPv4-mapped ``::ffff:127.0.0.1`` (but not other
mapped 127.x addresses, which that test did not accept either).

The address is known when a connection is accepted, so the listener asks
``trusts(host)`` once and records the answer on the connection's ``Peer``
(``Peer.local``); a handler asks ``allows(peer)``. Keeping both here is the
seam for a per-connection credential later (issue 10): ``allows`` is where
it would be checked. There is no token today: nothing on the wire carries one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

__all__ = ["AdminPolicy", "LOOPBACK", "parse_networks"]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1", "::ffff:127.0.0.1")


class _Peer(Protocol):
    @property
    def local(self) -> bool: ...  # the policy trusted its address (or it is the unix socket)


def parse_networks(value: Any) -> tuple[str, ...]:
    """Addresses or networks, from a comma-separated string or a list of strings.

    ``"none"`` (or an empty list) leaves only the unix socket.

    Raises:
        ValueError: something that is not an address or a network.
    """
    if isinstance(value, str):
        items = [] if value.strip().lower() == "none" else value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ValueError(f"must be addresses or networks such as \"127.0.0.1,::1\", not {value!r}")
    out = []
    for item in (i.strip() for i in items):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"not an address or network: {item!r} (use e.g. 127.0.0.1, 10.0.0.0/8, ::1)") from None
        out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class AdminPolicy:
    allow_from: tuple[str, ...] = LOOPBACK
    _networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets = tuple(ipaddress.ip_network(a, strict=False) for a in parse_networks(self.allow_from))
        object.__setattr__(self, "_networks", nets)

    def trusts(self, host: str | None) -> bool:
        """Whether a connection from ``host`` (None: the unix socket) may send admin commands."""
        if host is None:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        # `in` is False across versions: ::ffff:127.0.0.1 matches only an IPv6 entry.
        return any(address in net for net in self._networks)

    def allows(self, peer: _Peer) -> bool:
        """Whether ``peer`` may send an admin command now."""
        return peer.local

    @property
    def who(self) -> str:
        """The peers it allows, for the refusal message."""
        if self.allow_from == LOOPBACK:
            return "loopback or the unix socket"
        if not self.allow_from:
            return "the unix socket"
        return "the unix socket or " + ", ".join(self.allow_from)
