"""Where ``logd read`` puts records, and when its cursor may move (issue 7, item 2).

A cursor must never name a record the consumer did not take. Two sinks:

- ``FdSink`` writes to stdout's fd itself, looping on short writes and
  waiting out ``EAGAIN`` (a non-blocking stdout, an unbuffered
  ``PYTHONUNBUFFERED=1`` stream: Python's file objects drop or raise
  there). The cursor moves to a record once its bytes are written, i.e.
  accepted by the pipe: not necessarily read, let alone processed. On EPIPE
  the consumer is gone and whatever sat in the pipe is lost, so the caller
  puts the cursor back where the run found it (``OutputClosed``).
- ``ExecSink`` runs the consumer itself (``--exec CMD``): records go to the
  command's stdin, one run per batch, and the cursor moves to the batch's
  last record only when the command read all of it and exited 0.

And how a structured body is shown: ``fields_of`` recognises a body that is
one msgpack map with text keys (what ``logd.ship`` and ``append_obj`` of a
dict write); ``jsonable`` and ``logfmt`` render its fields for ``-o json``
and for a terminal. Any other body is shown as before.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import select
import signal
import stat
import subprocess
import sys
import termios
from typing import Any, Callable

import msgpack

__all__ = [
    "write_all", "FdSink", "ExecSink", "OutputClosed", "ConsumerFailed", "fields_of", "jsonable", "logfmt",
]


class OutputClosed(Exception):
    """stdout's reader went away (EPIPE) before taking everything."""


class ConsumerFailed(Exception):
    """The ``--exec`` command failed a batch: exited non-zero, was killed, or stopped reading."""


_DEFERRED = {signal.SIGINT, signal.SIGTERM}
# After select() says a pipe is writable, one free page is certain; so is one
# PIPE_BUF (4096) write to a socket that selected writable.
_PAGE = 4096


def write_all(fd: int, data: bytes | memoryview, done: Callable[[], None] | None = None) -> None:
    """Write every byte to ``fd``, then call ``done()``; wait (without spinning) while it is full.

    SIGINT/SIGTERM handlers that raise can interrupt the waits but not the
    step from the last byte written to ``done()``: each ``os.write`` runs with
    those signals blocked and is sized so that it cannot block (for a pipe,
    the room left in it). Otherwise a signal landing just after the last
    write would leave the caller unsure whether its bytes went out.

    Raises:
        BrokenPipeError: the reader is gone.
    """
    view = memoryview(data)
    while True:
        select.select([], [fd], [])
        room = _room(fd)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        try:
            try:
                n = os.write(fd, view[:room] if room else view)
            except BlockingIOError:
                n = 0
            view = view[n:]
            if not view:
                if done is not None:
                    done()
                return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _room(fd: int) -> int:
    """Bytes a write to ``fd`` can take without blocking, 0 if unbounded (file or terminal)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return 4096
    if stat.S_ISREG(mode) or stat.S_ISCHR(mode):
        return 0
    if stat.S_ISFIFO(mode):
        try:
            size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            buf = bytearray(4)
            fcntl.ioctl(fd, termios.FIONREAD, buf)
        except OSError:
            return _PAGE
        # Unread bytes may straddle partly filled pages: keep two pages in hand.
        return max(_PAGE, size - int.from_bytes(buf, sys.byteorder) - 2 * _PAGE)
    return _PAGE


class FdSink:
    """Records to a file descriptor; ``taken`` is the last id whose bytes were all written."""

    def __init__(self, fd: int, save: Callable[[int], None] | None) -> None:
        self.fd = fd
        self.save = save
        self.taken = 0
        self._chunk: list[bytes] = []
        self._size = 0
        self._last = 0

    @property
    def size(self) -> int:
        return self._size

    def add(self, rec_id: int, line: bytes) -> None:
        self._chunk.append(line)
        self._size += len(line)
        self._last = rec_id

    def flush(self, end_of_batch: bool = False) -> None:
        if self._chunk:
            data = b"".join(self._chunk)
            self._chunk.clear()
            self._size = 0
            try:
                write_all(self.fd, data, self._taken)
            except BrokenPipeError as exc:
                raise OutputClosed() from exc

    def _taken(self) -> None:
        self.taken = self._last
        if self.save is not None:
            self.save(self.taken)  # inside write_all's signal-free step: never one behind

    def close(self, ok: bool) -> None:
        self.flush()  # on errors too: every record added passed its checks


class ExecSink:
    """Records to a command's stdin, one run per batch; the cursor moves when it exits 0."""

    def __init__(self, command: str, save: Callable[[int], None] | None, grace: float = 10.0) -> None:
        self.command = command
        self.save = save
        self.grace = grace
        self.taken = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._chunk: list[bytes] = []
        self._size = 0
        self._first = 0
        self._last = 0
        self._broken = False

    @property
    def size(self) -> int:
        return self._size

    def add(self, rec_id: int, line: bytes) -> None:
        if self._proc is None:
            self._proc = subprocess.Popen(["/bin/sh", "-c", self.command], stdin=subprocess.PIPE)
            self._first = rec_id
            self._broken = False
        self._last = rec_id
        self._chunk.append(line)
        self._size += len(line)

    def flush(self, end_of_batch: bool = False) -> None:
        if self._chunk:
            data = b"".join(self._chunk)
            self._chunk.clear()
            self._size = 0
            if not self._broken and self._proc is not None and self._proc.stdin is not None:
                try:
                    write_all(self._proc.stdin.fileno(), data)
                except BrokenPipeError:
                    self._broken = True  # it stopped reading: the batch fails whatever it exits with
        if end_of_batch:
            self._finish()

    def _finish(self, wait: float | None = None) -> None:
        proc = self._proc
        if proc is None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.close()
        except BrokenPipeError:
            self._broken = True
        try:
            code = proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                code = proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        # Only now: a signal during the wait leaves the run to close(ok=False).
        self._proc = None
        ids = f"{self._first}-{self._last}" if self._last > self._first else str(self._first)
        if code < 0:
            raise ConsumerFailed(f"{self.command!r} was killed by {signal.Signals(-code).name} (records {ids})")
        if code != 0:
            raise ConsumerFailed(f"{self.command!r} exited {code} (records {ids})")
        if self._broken:
            raise ConsumerFailed(f"{self.command!r} exited 0 but did not read all of records {ids}")
        self.taken = self._last
        if self.save is not None:
            self.save(self.taken)

    def close(self, ok: bool) -> None:
        """End the batch under way. On an interruption the command still gets what was
        read and EOF and, within ``grace`` seconds, may finish and exit 0: then it counts."""
        self.flush()
        self._finish(None if ok else self.grace)


# -- structured bodies ----------------------------------------------------------------


def fields_of(body: bytes) -> dict[str, Any] | None:
    """The map if ``body`` is exactly one non-empty msgpack map with text keys, else None.

    Anything else (text, a msgpack list or number, a map with other keys,
    trailing bytes, strings that are not UTF-8) is not decoded. Text cannot
    be mistaken: UTF-8 never starts with a fixmap byte (0x80-0x8f).
    """
    if not body or not (0x80 <= body[0] <= 0x8F or body[0] in (0xDE, 0xDF)):
        return None  # the cheap test first: most text bodies stop here
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises several unrelated types
        return None
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        return None
    return obj


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: bytes as text (bad UTF-8 backslash-escaped), maps with
    text keys, lists; NaN, infinities and other types (timestamps, ext types) as ``str``."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else str(jsonable(k))): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


# Shown first, as structlog's ConsoleRenderer does: "timestamp [level] event".
_LEAD = ("timestamp", "level", "event")


def logfmt(fields: dict[str, Any], escape: Callable[[str], str]) -> str:
    """``timestamp [level] event key=value ...``: the lead keys (if present) as structlog's
    ConsoleRenderer shows them, then the rest in order, logfmt style.

    ``escape`` makes a string safe for a terminal (no control characters);
    values with a space, ``=``, ``"`` or nothing in them are quoted with ``\"``
    inside. Non-strings are shown as JSON (``true``, ``null``, ``[1, 2]``).
    """
    lead = []
    if isinstance(fields.get("timestamp"), str):
        lead.append(escape(fields["timestamp"]))
    if isinstance(fields.get("level"), str):
        lead.append(f"[{escape(fields['level'])}]")
    if "event" in fields:
        lead.append(_value(fields["event"], escape))
    rest = [
        f"{escape(k)}={_value(v, escape)}"
        for k, v in fields.items()
        if not (k in _LEAD and (k == "event" or isinstance(v, str)))
    ]
    return " ".join(lead + rest)


def _value(value: Any, escape: Callable[[str], str]) -> str:
    if isinstance(value, bytes):  # shown as text, bytes that are not UTF-8 as escape() shows them
        value = value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
        return escape(json.dumps(jsonable(value), ensure_ascii=False))
    text = escape(value)
    if text and not any(c in text for c in ' ="'):
        return text
    return '"' + text.replace('"', '\\"') + '"'
