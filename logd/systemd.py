"""sd_notify without libsystemd: the protocol is a datagram of ``KEY=value`` lines.

The systemd developers call this protocol stable API; ``sd_notify(3)``
carries a standalone reimplementation. ``$NOTIFY_SOCKET`` is a path or, with
a leading ``@``, an abstract socket name. A no-op outside ``Type=notify``
(no ``$NOTIFY_SOCKET``); other address kinds (``vsock:``) are not supported
and count as "not sent". The watchdog interval comes from ``$WATCHDOG_USEC``
when ``$WATCHDOG_PID`` is unset or names this process (``sd_watchdog_enabled(3)``).
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "watchdog_interval"]


def notify(*lines: str) -> bool:
    """Send ``lines`` as one datagram; True when it was sent.

    The send never blocks (a full receive queue loses the datagram, as a
    missing socket does): the caller is the gevent hub's thread.
    """
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # abstract namespace
    elif addr[0] != "/":
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)
            s.sendto("\n".join(lines).encode(), addr)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds within which systemd wants ``WATCHDOG=1``, or None for no watchdog."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None
