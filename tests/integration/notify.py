"""A datagram socket the test owns, standing in for systemd's ``$NOTIFY_SOCKET``.

At a path (in a short directory under /tmp: ``sun_path`` holds 108 bytes) or
at an abstract name (``@name``), as systemd gives either. A thread receives
every datagram with the sender's pid (``SO_PASSCRED``: what systemd's
``NotifyAccess=main`` checks), so a test can wait for ``READY=1`` from the
process it started and read what came before and after.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Notice:
    at: float  # time.monotonic() when received
    wall: float  # time.time() when received
    pid: int  # the sender's
    text: str  # the datagram: KEY=value lines

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")


class NotifySocket:
    def __init__(self, kind: str = "path") -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.dir: str | None = None
        if kind == "path":
            self.dir = tempfile.mkdtemp(prefix="logd-n-", dir="/tmp")
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)
        else:
            name = f"logd-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        self.sock.settimeout(0.2)  # the thread looks at _closed this often
        self.notices: list[Notice] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data, anc, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(UCRED.size))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = UCRED.unpack(payload[:UCRED.size])[0]
            with self._cond:
                self.notices.append(Notice(time.monotonic(), time.time(), pid, data.decode()))
                self._cond.notify_all()

    def texts(self, pid: int | None = None) -> list[str]:
        with self._cond:
            return [n.text for n in self.notices if pid is None or n.pid == pid]

    def with_line(self, line: str, pid: int | None = None) -> list[Notice]:
        """Every notice holding ``line`` (``READY=1``) or a line starting with it (``STATUS=``)."""
        with self._cond:
            return [n for n in self.notices if (pid is None or n.pid == pid)
                    and any(x == line or (line.endswith("=") and x.startswith(line)) for x in n.lines)]

    def until(self, line: str, timeout: float = 15.0, pid: int | None = None, count: int = 1,
              alive: Callable[[], bool] | None = None) -> list[str]:
        """Wait for ``count`` notices with ``line`` (see ``with_line``); returns every text so far.

        ``alive()`` returning False (the process exited) ends the wait early, with AssertionError.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.with_line(line, pid)) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"no {line!r} (x{count}) within {timeout}s; got {self.texts(pid)}"
                assert alive is None or alive(), f"exited before {line!r}; got {self.texts(pid)}"
                self._cond.wait(min(left, 0.1))
        return self.texts(pid)

    def close(self) -> None:
        self._closed = True
        self._thread.join(2.0)
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
