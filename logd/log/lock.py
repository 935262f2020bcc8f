"""The writer lock: one process writes a data directory, and says which one.

The ``lock`` file is ``flock()``-ed exclusively by the writer (``logd
serve``, ``logd check``, later ``logd-follower``) for as long as it has the
directory open; the kernel drops the lock when the process dies, however it
dies, so a crash never leaves a directory locked. Once it holds the lock the
writer replaces the file's contents with one line of JSON naming itself::

    {"pid": 1234, "program": "logd serve", "since": "2026-12-01T22:30:00Z"}

and empties the file again when it lets go, so ``cat lock`` shows who holds
the directory, or nothing. No fsync: the contents only matter while the
holder is alive. A second writer fails with ``DirectoryLocked``, whose
message names the holder (``data directory /x is in use by pid 1234 (logd
serve, since ...); stop it first``).

The contents are a hint, the flock is the truth: ``holder()`` reports what
the file says only while the lock is really held. A writer that finds the
lock held but the file not naming a live process (the holder has not
written it yet, or ``holder()`` is probing at that instant, or the holder is
a logd from before issue 8) retries for up to ``SETTLE`` seconds before it
gives up.

Readers (a read-only open) take no lock at all.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import Locked, StorageError

__all__ = ["LOCK_FILE", "Holder", "UNKNOWN", "DirectoryLocked", "WriterLock", "holder", "this_program"]

LOCK_FILE = "lock"
SETTLE = 0.5  # seconds a writer waits for an unnamed holder to name itself
_POLL = 0.02


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    program: str
    since: str  # UTC, "YYYY-MM-DDTHH:MM:SSZ"

    def describe(self) -> str:
        if not self.known:
            return "another process (it does not say which)"
        return f"pid {self.pid} ({self.program}, since {self.since})"

    @property
    def known(self) -> bool:
        return self.pid > 0


UNKNOWN = Holder(0, "unknown", "unknown")  # holds the lock, but the file does not name it


class DirectoryLocked(Locked):
    """Another process holds the writer lock; ``holder`` names it (or is ``UNKNOWN``)."""

    def __init__(self, directory: str, holder: Holder) -> None:
        super().__init__(f"data directory {directory} is in use by {holder.describe()}; stop it first")
        self.directory = directory
        self.holder = holder


class WriterLock:
    """The held lock on one directory. Get one with ``WriterLock.acquire``."""

    def __init__(self, directory: str, fd: int, holder: Holder) -> None:
        self.directory = directory
        self.holder = holder
        self._fd = fd

    @classmethod
    def acquire(cls, directory: str, program: str | None = None) -> WriterLock:
        """Take the lock on ``directory`` (creating its lock file) and write who we are.

        ``program`` defaults to this process's command (``this_program()``).

        Raises:
            DirectoryLocked: another process holds it; the message names it.
            StorageError: the lock file cannot be opened or written.
        """
        path = os.path.join(directory, LOCK_FILE)
        try:
            # No O_TRUNC: until we hold the lock, the contents are the holder's.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc
        try:
            _lock(fd, directory)
            me = Holder(os.getpid(), program or this_program(), _now())
            data = json.dumps({"pid": me.pid, "program": me.program, "since": me.since}).encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data + b"\n", 0)
            except OSError as exc:
                raise StorageError(f"cannot write lock file {path}: {exc.strerror or exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(directory, fd, me)

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Say nobody holds it (empty the file), then let go. Safe to call twice."""
        if self._fd < 0:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # only the hint is stale; closing drops the lock all the same
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = self.holder.describe() if self.held else "released"
        return f"<WriterLock {self.directory!r} {state}>"


def holder(directory: str) -> Holder | None:
    """Who holds ``directory``'s writer lock, without taking it; None if nobody does.

    A holder that does not name itself (a logd from before issue 8, or one in
    the instant between taking the lock and writing the file) is ``UNKNOWN``
    (pid 0).
    """
    try:
        fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or UNKNOWN
        fcntl.flock(fd, fcntl.LOCK_UN)  # nobody writes: a stale name is not a holder
        return None
    finally:
        os.close(fd)


def this_program() -> str:
    """This process as an operator names it: ``logd serve``, ``logd-follower``, ``pytest``.

    From ``sys.argv``: the program's name (the package's for ``python -m``)
    and its subcommand, if the first argument is a word.
    """
    argv = sys.argv or [""]
    name = os.path.basename(argv[0])
    if name == "__main__.py":  # python -m logd
        name = os.path.basename(os.path.dirname(argv[0]))
    name = name or "python"
    if len(argv) > 1 and argv[1].isidentifier():
        return f"{name} {argv[1]}"
    return name


def _lock(fd: int, directory: str) -> None:
    deadline = time.monotonic() + SETTLE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            found = _read(fd)
            if (found is not None and _alive(found.pid)) or time.monotonic() >= deadline:
                raise DirectoryLocked(directory, found or UNKNOWN) from None
            time.sleep(_POLL)  # blocks the caller at most SETTLE, and only when the lock is taken


def _read(fd: int) -> Holder | None:
    """What the lock file says, or None if it names nobody usable."""
    try:
        doc: Any = json.loads(os.pread(fd, 4096, 0))
        holder = Holder(int(doc["pid"]), str(doc["program"]), str(doc["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return holder if holder.pid > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
