"""Sending READ streams: records go from partition files to the socket by sendfile.

A stream never holds records in memory: it asks the log for the byte spans
of ids ``[next, committed]`` and sends them with ``os.sendfile`` on the
non-blocking socket, waiting cooperatively for writability
(``gevent.socket.wait_write``) when the socket buffer is full. gevent's own
``socket.sendfile()`` copies through Python in 8 KiB reads, so it is not
used. A reader that stays unwritable for ``timeout`` seconds raises
``SendTimeout``; a slow reader therefore costs disk reads at its own pace,
never server memory.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from gevent.event import Event
from gevent.socket import wait_write

from . import protocol as p
from .errors import CorruptLogError, LogdError, NotRetained, ShuttingDown
from .log.partition import parse_name
from .record import MAX_HEADER

if TYPE_CHECKING:
    from .commit import Commits
    from .log import Log

__all__ = ["SendTimeout", "send_all", "send_file", "stream_records"]


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
    log_: "Log",
    commits: "Commits",
    start: int,
    limit: int,
    gone: Event,
    close_requested: Event | None,
    timeout: float,
) -> None:
    """Send ``OK``, the records from ``start``, and ``+EOF`` after ``limit`` (0: follow).

    Ends early, with a line that says why, on shutdown (``ERR SHUTDOWN``) and
    on ``close_requested`` (``+EOF``); silently when the peer is ``gone``.
    """
    send_all(sock, p.OK, timeout)
    next_id = start
    end_id = start + limit if limit else None
    files: dict[str, int] = {}
    where: list[tuple[str, int]] = []  # (path, offset) just past the last byte sent
    stops = [gone] + ([close_requested] if close_requested else [])
    try:
        while True:
            seen = commits.committed
            if commits.stopped.is_set():
                send_all(sock, p.encode_error(ShuttingDown("server is shutting down")), 1.0)
                return
            if gone.is_set():
                return
            target = seen + 1
            if end_id is not None and end_id < target:
                target = end_id
            if target > next_id:
                try:
                    if next_id < log_.first_id():
                        next_id = _finish_deleted(sock, log_, next_id, target, files, where, timeout)
                        continue
                    bad = log_.corrupt_between(next_id, target)
                    stop_at = max(bad.first, next_id) if bad else target
                    _send_spans(sock, log_, next_id, stop_at, files, where, timeout)
                    if bad:
                        raise CorruptLogError(
                            f"record {stop_at} in partition {bad.partition} at offset {bad.start} "
                            "fails its checks; it cannot be served",
                            partition=bad.partition, offset=bad.start, id=stop_at,
                        )
                except LogdError as exc:
                    send_all(sock, p.encode_error(exc), timeout)
                    return
                next_id = target
            if (end_id is not None and next_id >= end_id) or (
                close_requested is not None and close_requested.is_set()
            ):
                send_all(sock, p.EOF, timeout)
                return
            commits.wait(seen, *stops)
    finally:
        for fd in files.values():
            os.close(fd)


def _finish_deleted(
    sock: socket.socket, log_: Any, next_id: int, target: int, files: dict[str, int],
    where: list[tuple[str, int]], timeout: float,
) -> int:
    """Retention deleted the partition this reader is in: send the rest of it
    (up to ``target``) from the fd we hold, then go on with the next partition
    if it is still there. Returns the next id due."""
    if not where or where[-1][0] not in files:
        raise NotRetained(f"records from {next_id} were deleted by retention",
                          first=log_.first_id(), head=log_.head())
    path, offset = where[-1]
    fd = files[path]
    size = os.fstat(fd).st_size
    stop, reached = _walk(fd, offset, size, next_id, target)  # the index went with the file
    if stop > offset:
        send_file(sock, fd, offset, stop - offset, timeout)
    if reached == target:
        where[:] = [(path, stop)]
        return target
    number = parse_name(os.path.basename(path))
    following = log_.first_id_of(number[0] + 1) if number else None
    if following is None:  # the same line as when spans() finds the next one gone
        raise NotRetained(f"records from {reached} were deleted by retention",
                          first=log_.first_id(), head=log_.head())
    os.close(files.pop(path))
    where.clear()
    return following


def _walk(fd: int, offset: int, size: int, id: int, target: int) -> tuple[int, int]:
    """Step over record headers from ``offset`` (record ``id``) until record
    ``target`` or the end of the file; return (offset, id) reached."""
    while id < target and offset < size:
        header = os.pread(fd, MAX_HEADER, offset)
        nl = header.find(b"\r\n")
        fields = header[1:nl].split(b" ") if header[:1] == b"+" and nl > 0 else []
        if len(fields) != 4 or not fields[1].isdigit():
            raise CorruptLogError(f"no record header at offset {offset} of a deleted partition")
        offset += nl + 2 + int(fields[1]) + 2
        id += 1
    return offset, id


def _send_spans(
    sock: socket.socket, log_: Any, start: int, end: int, files: dict[str, int],
    where: list[tuple[str, int]], timeout: float,
) -> None:
    used = set()
    for source, offset, count in log_.spans(start, end):
        if isinstance(source, bytes):
            send_all(sock, source[offset : offset + count], timeout)
            continue
        fd = files.get(source)
        if fd is None:
            try:
                fd = files[source] = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                # Deleted since spans() named it: its records are gone, not only `start`.
                named = parse_name(os.path.basename(source))
                gone_from = named[1] if named and offset == 0 else start
                raise NotRetained(f"records from {gone_from} were deleted by retention",
                                  first=log_.first_id(), head=log_.head()) from None
        used.add(source)
        send_file(sock, fd, offset, count, timeout)
        where[:] = [(source, offset + count)]
    # Keep only the partition we are in: a follower stays there for many commits.
    for path in [path for path in files if path not in used]:
        os.close(files.pop(path))
