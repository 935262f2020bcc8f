"""A raw-socket peer for protocol-level integration tests: exact bytes, deadlines."""

from __future__ import annotations

import socket
import time
from typing import Any

import msgpack

from logd import protocol

SMALL_WINDOW = 4096  # bytes: a receive buffer far smaller than any stream under test


class Wire:
    def __init__(self, host: str, port: int | None = None, timeout: float = 10.0) -> None:
        if port is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(host)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    @classmethod
    def adopt(cls, sock: socket.socket, timeout: float = 10.0) -> "Wire":
        """A Wire over a socket already connected (a ``small_window`` one, say)."""
        w = cls.__new__(cls)
        w.sock, w.timeout, w.buf = sock, timeout, b""
        return w

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, name: str, *args: bytes | str | int) -> None:
        self.send(protocol.encode_command(name, *args))

    def _recv(self, deadline: float, waiting_for: str) -> bytes | None:
        """One recv before ``deadline``: bytes, b"" when the server closed, None
        when this wait timed out; AssertionError once the deadline has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{waiting_for} within deadline; got {self.buf[-200:]!r}")
        self.sock.settimeout(left)
        try:
            return self.sock.recv(1 << 20)
        except socket.timeout:
            return None

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """Everything up to and including ``marker``; AssertionError past the deadline."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while marker not in self.buf:
            chunk = self._recv(deadline, f"no {marker!r}")
            if chunk == b"":
                raise AssertionError(f"connection closed before {marker!r}; got {self.buf[-200:]!r}")
            self.buf += chunk or b""
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            chunk = self._recv(deadline, f"not {n} bytes (had {len(self.buf)})")
            if chunk == b"":
                raise AssertionError(f"connection closed after {len(self.buf)} of {n} bytes")
            self.buf += chunk or b""
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self) -> bytes:
        return self.read_until(b"\r\n")

    def read_to_close(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes; AssertionError if it does not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                chunk = self._recv(deadline, "server did not close")
            except ConnectionResetError:
                chunk = b""
            if chunk == b"":
                out, self.buf = self.buf, b""
                return out
            self.buf += chunk or b""

    def nothing_pending(self, wait: float = 0.2) -> bool:
        """True when no byte arrives within ``wait`` seconds (a negative check)."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return not self.buf
        self.buf += chunk
        return False

    def stats(self) -> dict[str, Any]:
        """STATS msgpack on this connection, decoded; AssertionError on any other reply
        (an ERR MAXCLIENTS, say), with the reply in the message."""
        self.cmd("STATS", "msgpack")
        header = self.line()
        assert header.startswith(b"OK "), f"STATS answered {header!r}"
        body = self.read_exact(int(header[3:-2]) + 2)
        assert body.endswith(b"\r\n"), body[-20:]
        return msgpack.unpackb(body[:-2])

    def close(self) -> None:
        self.sock.close()


def wire(server: Any, timeout: float = 10.0) -> Wire:
    """A Wire to a ``logd_server`` fixture's TCP address."""
    return Wire(server.host, server.port, timeout)


def small_window(server: Any, timeout: float = 5.0) -> socket.socket:
    """A raw socket with a small receive buffer, set before connecting so the
    TCP window is small from the start: a peer that reads slowly, or never."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_WINDOW)
    s.settimeout(timeout)
    s.connect((server.host, server.port))
    return s


def records(body: bytes) -> list[tuple[int, bytes]]:
    """Parse a READ reply body (after OK) into (id, body) pairs, checking crcs."""
    parser = protocol.ReplyParser()
    parser.receive_data(body)
    out = []
    while True:
        item = parser.next_record()
        if item is protocol.NEED_DATA or isinstance(item, protocol.Eof):
            return out
        out.append((item.id, item.body))
