"""What drives a read replica's commit source: its data directory changing.

A read replica (``logd serve --refuse``) opens its data directory with the
read-only ``LogReader`` (log/reader.py); another process, the follower,
appends to it. The ``Watcher`` waits for the directory to change, calls
``reader.refresh()`` (whole MSGs only, new partitions, partitions retention
deleted) and publishes the new head to the commit source
(events/commit.py), which wakes tail readers (and REPLICATE streams) just as
the event queue does on a primary.

How it learns of a change (``--watch``):

``inotify``
    One watch on the directory. A directory watch also reports
    ``IN_MODIFY`` of the files in it (inotify(7)), so appends to the active
    partition, new partitions (``IN_CREATE``), retention's deletes
    (``IN_DELETE``) and atomic replacements (``IN_MOVED_TO``: the status
    file, ``meta``) all arrive on one fd. The fd is non-blocking and read
    when gevent's hub says it is readable; every event waiting is read and
    they all lead to one refresh, however many writes they stand for.
    Measured on loopback (docs/server.rst): a tail reader on the replica
    gets a record about a millisecond after the writer's ``write``.
    A refresh also runs every ``SAFETY_REFRESH`` seconds regardless, and
    after an event-queue overflow.
``poll``
    A refresh every ``--watch-interval`` (an ``fstat`` of the active
    partition and a directory listing): the fallback where inotify is
    missing. A reader waits up to the interval for each new record.
``auto``
    inotify where it can be had, else poll (logged as ``inotify_unavailable``).

The status file (log/status.py) and ``meta`` are looked at (a ``stat``) at
each refresh and re-read when they changed. A directory that is moved away
or deleted under the replica (``IN_MOVE_SELF``, ``IN_DELETE_SELF``), or
whose ``meta`` names another history than the one served (a follower's
``--resync`` started a new copy), calls ``on_gone``: the daemon stops with
exit 1 rather than serve a log that is not there, or mix two.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time
from typing import Callable

import gevent
import gevent.socket
import structlog

from .errors import LogdError, Refused, StorageError
from .events.commit import Commits
from .log import status as status_file
from .log.lock import holder
from .log.meta import META_FILE
from .log.meta import load as load_meta
from .log.reader import LogReader

__all__ = ["Inotify", "Watcher", "SAFETY_REFRESH"]

log = structlog.get_logger("logd.watch")

SAFETY_REFRESH = 1.0  # seconds: with inotify, refresh this often even without events

# <sys/inotify.h>
IN_MODIFY = 0x00000002
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WATCH_MASK = (IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
              | IN_MOVE_SELF | IN_ONLYDIR)
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class Inotify:
    """One inotify watch on a directory, read without blocking the hub."""

    def __init__(self, directory: str) -> None:
        """Raises: OSError: inotify is not available, or the watch cannot be added."""
        libc = ctypes.CDLL(None, use_errno=True)  # the C library this Python is linked with
        if not hasattr(libc, "inotify_init1"):
            raise OSError(errno.ENOSYS, "this C library has no inotify")
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        wd = libc.inotify_add_watch(fd, os.fsencode(directory), WATCH_MASK)
        if wd < 0:
            e = ctypes.get_errno()
            os.close(fd)
            raise OSError(e, f"inotify_add_watch {directory}: {os.strerror(e)}")
        self.fd = fd

    def read(self) -> list[tuple[int, str]]:
        """Every event waiting, as ``(mask, name)``; ``[]`` if none."""
        out: list[tuple[int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            pos = 0
            while pos + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size
                name = data[pos:pos + length].rstrip(b"\0")
                pos += length
                out.append((mask, os.fsdecode(name)))

    def wait(self, timeout: float | None) -> list[tuple[int, str]]:
        """The next events, waiting cooperatively up to ``timeout``; ``[]`` on timeout."""
        events = self.read()
        if events:
            return events
        try:
            gevent.socket.wait_read(self.fd, timeout)
        except TimeoutError:
            return []
        return self.read()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class Watcher:
    """Refreshes ``reader`` when its directory changes and publishes to ``commits``."""

    def __init__(self, reader: LogReader, mode: str = "auto", interval: float = 0.1,
                 on_gone: Callable[[str], None] = lambda why: None) -> None:
        """Raises: StorageError: ``mode`` is ``inotify`` and inotify cannot watch the directory."""
        self.reader = reader
        self.commits: Commits | None = None  # given to start(): the queue's
        self.interval = interval
        self.on_gone = on_gone
        self._inotify: Inotify | None = None
        if mode != "poll":
            try:
                self._inotify = Inotify(reader.directory)
            except OSError as exc:
                if mode == "inotify":
                    raise StorageError(f"cannot watch {reader.directory} with inotify: {exc}") from exc
                log.warning("inotify_unavailable", error=str(exc), watch="poll", interval=interval)
        self.mode = "inotify" if self._inotify is not None else "poll"
        self.status: status_file.FollowerStatus | None = None
        self.status_error = ""
        self._status_stat: tuple[int, int, int] | None = None
        self._meta_stat: tuple[int, int, int] | None = None  # the first check compares it
        self._lost = False  # the directory holds another history now: nothing more is refreshed
        self.events = 0  # inotify events read
        self.refreshes = 0
        self.publishes = 0
        self.refresh_errors = 0
        self.last_error = ""
        self.last_refresh = 0.0
        self._greenlet: gevent.Greenlet[[], None] | None = None

    # -- running ----------------------------------------------------------------------

    def start(self, commits: Commits) -> None:
        """Publish to ``commits`` from now on, after a first refresh."""
        self.commits = commits
        self.check()
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        if self._inotify is not None:
            self._inotify.close()

    def _run(self) -> None:
        while True:
            if self._inotify is None:
                gevent.sleep(self.interval)
            else:
                events = self._inotify.wait(SAFETY_REFRESH)
                self.events += len(events)
                # Events of the directory itself have no name; an overflow
                # (IN_Q_OVERFLOW) just means "refresh", as every event does.
                if any(mask & GONE and not name for mask, name in events):
                    self._inotify.close()
                    self._inotify = None  # nothing more will come from this watch
                    log.error("data_dir_gone", directory=self.reader.directory)
                    self.on_gone(f"data directory {self.reader.directory} was moved or deleted")
                    return
            try:
                self.check()
            except Exception:  # a bug must not stop the replica from seeing new data for good
                log.exception("watch_failed")
                gevent.sleep(SAFETY_REFRESH)

    def check(self) -> int:
        """Refresh once: take in what the writer appended, re-read a changed status
        file, publish a new head. Returns the head. A failed refresh is logged and
        counted; what it verified before the failure is published all the same,
        and the next change retries."""
        self._check_status()
        if not self._check_history():
            return self.reader.head()
        try:
            self.reader.refresh()
        except (LogdError, OSError) as exc:
            self.refresh_errors += 1
            if str(exc) != self.last_error:  # once per distinct problem, not per event
                log.error("refresh_failed", error=str(exc), head=self.reader.head())
            self.last_error = str(exc)
        else:
            self.refreshes += 1
            self.last_refresh = time.time()
            if self.last_error:
                log.info("refresh_recovered", head=self.reader.head())
                self.last_error = ""
        head = self.reader.head()
        position = self.reader.position(head + 1)  # the end of the active partition: no I/O
        commits = self.commits
        if commits is not None and (head != commits.committed or position != commits.position):
            commits.publish(head, position)
            self.publishes += 1
        return head

    def _check_history(self) -> bool:
        """False once ``meta`` names another history than the one served: the
        directory now holds another log (a follower's --resync), and serving
        it on would mix two logs under one reader's cursors."""
        key = _stat_key(os.path.join(self.reader.directory, META_FILE))
        if key == self._meta_stat or self._lost:
            return not self._lost
        self._meta_stat = key
        try:
            found = load_meta(self.reader.directory)
        except StorageError as exc:
            log.warning("meta_unreadable", error=str(exc))
            return True
        served = self.reader.meta
        if found is not None and served is not None and found.history != served.history:
            self._lost = True
            log.error("history_changed", served=served.history, found=found.history)
            self.on_gone(f"data directory {self.reader.directory} now holds another history "
                         f"({found.history}, not {served.history})")
            return False
        if found is not None:
            self.reader.meta = found  # the writer made it, or added an epoch
        return True

    def _check_status(self) -> None:
        key = _stat_key(os.path.join(self.reader.directory, status_file.STATUS_FILE))
        if key == self._status_stat:
            return
        self._status_stat = key
        try:
            self.status = status_file.load(self.reader.directory)
            self.status_error = ""
        except StorageError as exc:
            if str(exc) != self.status_error:
                log.warning("follower_status_unreadable", error=str(exc))
            self.status_error = str(exc)

    # -- what the replica tells clients -------------------------------------------------

    @property
    def primary(self) -> str | None:
        return self.status.primary if self.status is not None else None

    def refused(self) -> Refused:
        """The error a MSG gets here: ``ERR_CLIENT REFUSED ... (primary=host:port)`` when known."""
        primary = self.primary
        where = "send writes to the primary" if primary else "the primary is not known here"
        return Refused(f"this server is a read replica and takes no writes; {where}", primary=primary)

    def stats(self) -> dict[str, object]:
        """The replica's part of STATS (docs/server.rst, "Read replicas")."""
        s = self.status
        head = self.reader.head()
        partition, offset = self.reader.position(head + 1)
        writer = holder(self.reader.directory)
        out: dict[str, object] = {
            "role": "replica",
            "primary": (s.primary or "") if s else "",
            "link": _link(s) if s else "unknown",
            "link_reason": s.reason if s else (self.status_error or f"no {status_file.STATUS_FILE}"),
            "follower_status_age_seconds": round(s.age(), 3) if s else -1,
            "follower_written": _show(s.written) if s else "",
            "follower_fsynced": _show(s.fsynced) if s else "",
            "primary_head": s.primary_head if s and s.primary_head is not None else -1,
            "lag_ids": max(0, s.primary_head - head) if s and s.primary_head is not None else -1,
            "visible_partition": partition,
            "visible_offset": offset,
            "writer": writer.describe() if writer is not None else "none",
            "watch": self.mode,
            "watch_events": self.events,
            "refreshes": self.refreshes,
            "refresh_publishes": self.publishes,
            "refresh_errors": self.refresh_errors,
            "refresh_error": self.last_error,
            "last_refresh_time": round(self.last_refresh, 3),
        }
        return out


def _stat_key(path: str) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten; None if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _link(s: status_file.FollowerStatus) -> str:
    # A follower that stopped writing its status is not streaming, whatever it last said.
    return "stale" if s.link != "stopped" and s.age() > status_file.STALE else s.link


def _show(pos: status_file.Position | None) -> str:
    return f"{pos[0]}:{pos[1]}:{pos[2]}" if pos else ""
