"""Who may send admin commands (SHUTDOWN, REFUSE, ACCEPT): pure code the handlers ask.

Two ways in (issue 10):

- the peer's address: the unix socket always; over TCP, an address in
  ``allow_from`` (the ``admin_from`` setting). Its default,
  ``DEFAULT_ADMIN_FROM``, is exactly ``127.0.0.1`` and ``::1`` (and
  ``::ffff:127.0.0.1``, the same address seen on a dual-stack socket). Other
  loopback addresses (``127.0.0.2``) are not in it: on a shared host every
  local user reaches 127/8, and a container's port forward may arrive there.
- the admin token (``--admin-token`` or ``--admin-token-file``): any peer that
  sent ``AUTH <token>`` on its connection, like Redis's ``AUTH``. The compare
  is constant-time (``hmac.compare_digest``).

The address is known when a connection is accepted, so the listener asks
``trusts(host)`` once and records the answer on the connection's ``Peer``
(``Peer.local``); ``AUTH`` sets ``Peer.authenticated``; a handler asks
``allows(peer)``.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

__all__ = ["AdminPolicy", "DEFAULT_ADMIN_FROM", "parse_networks", "load_token"]

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

DEFAULT_ADMIN_FROM: tuple[str, ...] = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
MAX_TOKEN = 512  # bytes: longer is a mistake (a file read whole by accident)


class _Peer(Protocol):
    @property
    def local(self) -> bool: ...  # the policy trusted its address (or it is the unix socket)

    @property
    def authenticated(self) -> bool: ...  # it sent the right AUTH token on this connection


def load_token(token: str | None, token_file: str | None) -> str | None:
    """The admin token from the settings: one of the value or a file (its first
    line, surrounding whitespace stripped); None when neither is set.

    Raises:
        ValueError: both set, an unreadable file, or an empty or oversized token.
    """
    if token and token_file:
        raise ValueError("give --admin-token or --admin-token-file, not both")
    if token_file:
        try:
            with open(token_file, "rb") as f:
                raw = f.read(MAX_TOKEN + 2)
        except OSError as exc:
            raise ValueError(f"cannot read admin token file {token_file}: {exc.strerror or exc}") from None
        lines = raw.decode("utf-8", "replace").strip().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"admin token file {token_file} is empty")
    if token is None or token == "":
        return None
    if len(token.encode()) > MAX_TOKEN or any(c.isspace() for c in token):
        raise ValueError(f"the admin token must be one word of at most {MAX_TOKEN} bytes")
    return token


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
    allow_from: tuple[str, ...] = DEFAULT_ADMIN_FROM
    token: str | None = field(default=None, repr=False)
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
        return peer.local or peer.authenticated

    def check_token(self, given: bytes) -> bool:
        """Whether ``given`` is the admin token (False when none is configured)."""
        if self.token is None:
            return False
        return hmac.compare_digest(given, self.token.encode())

    @property
    def who(self) -> str:
        """The peers it allows, for the refusal message."""
        if self.allow_from == DEFAULT_ADMIN_FROM:
            out = "127.0.0.1, ::1 or the unix socket"
        elif not self.allow_from:
            out = "the unix socket"
        else:
            out = "the unix socket or " + ", ".join(self.allow_from)
        return out + (", or after AUTH with the admin token" if self.token is not None else "")
