"""sd_notify without libsystemd: the protocol is a datagram of ``KEY=value`` lines.

The systemd developers call this protocol stable API; ``sd_notify(3)``
carries a standalone reimplementation. A no-op outside ``Type=notify``.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify"]


def notify(*lines: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]  # abstract namespace
    elif addr[0] != "/":
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall("\n".join(lines).encode())
    except OSError:
        return False
    return True
