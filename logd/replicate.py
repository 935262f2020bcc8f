"""Sending REPLICATE streams: partition bytes to the socket by sendfile, framed.

Like ``stream.py`` for READ, and with its ``send_all`` / ``send_file``: the
stream asks its cursor (``log/cursor.py``) for the byte ranges of the
committed ids (``events/commit.py``) and sends each as one ``+DATA`` frame
header and one ``os.sendfile`` of exactly those bytes, never looking inside
them. A range never straddles partitions and always ends where a committed
MSG ends, so the follower can verify each frame whole and write it where the
frame says. When the cursor moves into the next partition, ``+NEXT`` says so
first; while nothing is committed, ``+HEAD`` goes out every ``heartbeat``
seconds. When retention has moved the first retained partition since the
follower last heard (at a ``+NEXT`` and before each ``+HEAD``), ``+FIRST``
says so: the follower deletes what the primary no longer keeps. The frames are in ``protocol/replication.py``.

Once this server refuses writes (REFUSE, or a higher epoch seen; not a read
replica), the stream goes on to its final id, then sends
``+REFUSED <final id> <new primary or ->`` instead of ``+EOF`` and ends: the
follower's fence (it exits when it is the named new primary's copy, or
follows the named one). A stream that starts at the final id gets it at once.

The backlog is the log on disk: nothing is buffered per follower. A follower
that takes nothing for ``timeout`` seconds raises ``SendTimeout`` (dropped
like a tail reader; it reconnects and resumes from its own tail).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from gevent.event import Event

from . import protocol as p
from .errors import LogdError
from .protocol import replication as rp
from .stream import send_all, send_committed, send_file

if TYPE_CHECKING:
    from .events.commit import Commits
    from .events.handlers import Replication
    from .log.cursor import Cursor  # a partition file's cursor: REPLICATE needs a data directory

__all__ = ["stream_replication", "HEARTBEAT"]

HEARTBEAT = 1.0  # seconds between +HEAD frames while idle


def _end_before(log_: Any, end: int) -> int | None:
    """The first id after partition ``end`` once that one is sealed, else None."""
    if not end:
        return None
    for part in log_.partitions():
        if part.number == end + 1:
            return int(part.first_id)
    return None


def stream_replication(
    sock: socket.socket,
    log_: Any,
    cursor: "Cursor",
    commits: "Commits",
    rep: "Replication",
    gone: Event,
    close_requested: Event | None,
    timeout: float,
    heartbeat: float = HEARTBEAT,
) -> None:
    """Send the hello, then frames from ``rep.partition:rep.offset`` on, until
    partition ``rep.end`` is sent whole (``+EOF``; 0: follow).

    Ends early, with a line that says why, on shutdown (``ERR SHUTDOWN``), on
    an error the cursor raises (``NOTRETAINED``, ``CORRUPT``) and on
    ``close_requested`` (``+EOF``); silently when the peer is ``gone``.
    """
    try:
        cursor.seek_position(rep.partition, rep.offset)
    except LogdError as exc:  # retention deleted it since the handler looked
        send_all(sock, p.encode_error(exc), timeout)
        return
    first = log_.partitions()[0]
    retained = first.number  # the hello said so; +FIRST when retention moves it
    send_all(sock, rep.hello, timeout)
    current = cursor.partition

    def send_first() -> None:
        nonlocal retained
        first = log_.partitions()[0]
        if first.number != retained:
            send_all(sock, rp.encode_first(first.number, first.first_id), timeout)
            retained = first.number

    def send_range(fd: int, offset: int, count: int) -> None:
        nonlocal current
        here = cursor.partition
        assert here is not None
        if here != current:
            send_all(sock, rp.encode_next(*here), timeout)
            current = here
            send_first()  # retention runs at rolls
        send_all(sock, rp.encode_data(here[0], offset, count), timeout)
        send_file(sock, fd, offset, count, timeout)

    def heartbeat_frame(committed: int) -> None:
        send_first()
        send_all(sock, rp.encode_head(committed, *commits.position), timeout)

    refused: tuple[int, str] | None = None

    def end() -> int | None:
        nonlocal refused
        stop = _end_before(log_, rep.end)
        refused = rep.refused() if rep.refused is not None else None
        if refused is not None and (stop is None or refused[0] + 1 < stop):
            return refused[0] + 1
        return stop

    def last_frame() -> bytes:
        if refused is not None and cursor.next_id > refused[0]:
            try:
                return rp.encode_refused(*refused)
            except ValueError:  # a new primary that is no address word: not named
                return rp.encode_refused(refused[0], "")
        return p.EOF

    send_committed(sock, cursor, commits, end, send_range, gone, close_requested, timeout, heartbeat,
                   heartbeat_frame, last_frame)
