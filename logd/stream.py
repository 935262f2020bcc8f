"""Sending READ streams: records go from partition files to the socket by sendfile.

A stream never holds records in memory, nor looks inside them: it asks its
cursor (``log/cursor.py``) for the byte ranges of ids ``[next, committed]``
(``logd/events/commit.py`` says what is committed) and sends each with one
``os.sendfile`` on the non-blocking socket, waiting cooperatively for writability
(``gevent.socket.wait_write``) when the socket buffer is full. gevent's own
``socket.sendfile()`` copies through Python in 8 KiB reads, so it is not
used. A reader that stays unwritable for ``timeout`` seconds raises
``SendTimeout``; a slow reader therefore costs disk reads at its own pace,
never server memory.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Callable

from gevent.event import Event
from gevent.socket import wait_write

from . import protocol as p
from .errors import LogdError, ShuttingDown

if TYPE_CHECKING:
    from .events.commit import Commits
    from .log import Cursor

__all__ = ["SendTimeout", "send_all", "send_file", "send_committed", "stream_records"]


class SendTimeout(Exception):
    """The peer did not take bytes for longer than the send timeout."""


def send_all(sock: socket.socket, data: bytes, timeout: float) -> None:
    """Send everything, waiting cooperatively at most ``timeout`` for each wait.

    Raw non-blocking writes: the common case (the socket buffer has room) is
    one system call, with no timer and none of gevent sendall's overhead.
    """
    fd = sock.fileno()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            wait_write(fd, timeout=timeout or None, timeout_exc=SendTimeout())
            continue
        view = view[n:]


def send_file(sock: socket.socket, fd: int, offset: int, count: int, timeout: float) -> None:
    sfd = sock.fileno()
    while count > 0:
        try:
            n = os.sendfile(sfd, fd, offset, count)
        except BlockingIOError:
            wait_write(sfd, timeout=timeout or None, timeout_exc=SendTimeout())
            continue
        if n == 0:
            raise OSError("partition file is shorter than its index says")
        offset += n
        count -= n


def stream_records(
    sock: socket.socket,
    cursor: "Cursor",
    commits: "Commits",
    limit: int,
    gone: Event,
    close_requested: Event | None,
    timeout: float,
) -> None:
    """Send ``OK``, the committed records from the cursor on, and ``+EOF``
    after ``limit`` (0: follow). One sendfile per range the cursor gives.

    Ends early, with a line that says why, on shutdown (``ERR SHUTDOWN``), on
    an error the cursor raises (``NOTRETAINED``, ``CORRUPT``) and on
    ``close_requested`` (``+EOF``); silently when the peer is ``gone``.
    """
    send_all(sock, p.OK, timeout)
    end_id = cursor.next_id + limit if limit else None

    def send_range(fd: int, offset: int, count: int) -> None:
        send_file(sock, fd, offset, count, timeout)

    send_committed(sock, cursor, commits, lambda: end_id, send_range, gone, close_requested, timeout)


def send_committed(
    sock: socket.socket,
    cursor: "Cursor",
    commits: "Commits",
    end: Callable[[], int | None],
    send_range: Callable[[int, int, int], None],
    gone: Event,
    close_requested: Event | None,
    timeout: float,
    heartbeat: float | None = None,
    on_idle: Callable[[int], None] | None = None,
    last_frame: Callable[[], bytes] | None = None,
) -> None:
    """The loop READ and REPLICATE streams share: hand every committed range
    from the cursor to ``send_range(fd, offset, count)`` until ``end()`` (the
    first id not to send, asked each round; None: follow), then ``+EOF``.

    Ends early with ``ERR SHUTDOWN`` on shutdown, with the cursor's error line
    (``NOTRETAINED``, ``CORRUPT``), with ``+EOF`` on ``close_requested``, and
    silently when the peer is ``gone``. ``on_idle(committed)`` runs after each
    ``heartbeat`` seconds in which nothing was committed. ``last_frame()``
    is what goes out at ``end()`` instead of ``+EOF`` (REPLICATE's ``+REFUSED``).
    """
    stops = [gone] + ([close_requested] if close_requested else [])
    while True:
        seen = commits.committed
        if commits.stopped.is_set():
            send_all(sock, p.encode_error(ShuttingDown("server is shutting down")), 1.0)
            return
        if gone.is_set():
            return
        target = seen + 1
        stop_at = end()
        if stop_at is not None and stop_at < target:
            target = stop_at
        if target > cursor.next_id:
            try:
                for fd, offset, count in cursor.ranges(target):
                    send_range(fd, offset, count)
            except LogdError as exc:
                send_all(sock, p.encode_error(exc), timeout)
                return
        if stop_at is not None and cursor.next_id >= stop_at:
            send_all(sock, last_frame() if last_frame is not None else p.EOF, timeout)
            return
        if close_requested is not None and close_requested.is_set():
            send_all(sock, p.EOF, timeout)
            return
        commits.wait(seen, *stops, timeout=heartbeat)
        if on_idle is not None and commits.committed == seen and not commits.stopped.is_set() and not any(
            e.is_set() for e in stops
        ):
            on_idle(seen)
