"""``logd write``'s engine: ship a live stdin stream as pipelined MSG batches.

``tail -F app.log | logd write`` must send each line soon after it arrives,
not when 1,000 lines or EOF come (issue 7, item 1). Strategy, after kcat -P
and librdkafka's ``linger.ms``:

- stdin is read with ``select`` + ``os.read`` on its raw fd, so a read
  returns what the pipe has instead of blocking for the next line.
- Lines queue up; a batch is sent when it is full (``--batch`` /
  ``--batch-bytes``), when its oldest line has waited ``linger`` seconds, or
  at EOF. ``--batch 1`` sends every line at once.
- Up to ``window`` MSGs are in flight; acks are read whenever the socket is
  readable, so ids print as the server confirms them.
- SIGINT/SIGTERM only set a flag (and wake ``select`` via
  ``signal.set_wakeup_fd``), so no MSG is ever cut in half. The loop then
  stops reading, sends what it has read, waits a bounded time for the acks
  and reports exactly what is known: ``Outcome`` feeds the summary line.

The loop runs on the client's ``Connection`` (``send``, ``receive``,
``poll_reply``, ``fileno``), not on ``Client.append_stream``: that pulls the
next batch before it reads acks, and so cannot wait on stdin and the socket
at once.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from . import errors
from .client import WINDOW
from .client.connection import FATAL, Connection
from .protocol import NEED_DATA, OkId, encode_command

__all__ = ["LineSplitter", "LiveWriter", "Outcome", "READ_SIZE"]

READ_SIZE = 64 * 1024  # a pipe's buffer; and under glibc's mmap threshold (server.py)


class LineSplitter:
    """Bytes in, message bodies out: one per line, without ``\\n`` and a ``\\r`` before it.

    Empty lines are counted in ``skipped``; ``pending`` is the length of an
    unfinished last line, which ``finish()`` returns as a body.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        end = self._buf.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(self._buf[:end]).split(b"\n")
        del self._buf[: end + 1]
        return self._bodies(lines, strip_cr=True)

    def finish(self) -> list[bytes]:
        rest = bytes(self._buf)
        self._buf.clear()
        return self._bodies([rest], strip_cr=False) if rest else []

    def _bodies(self, lines: list[bytes], strip_cr: bool) -> list[bytes]:
        out = []
        for line in lines:
            if strip_cr and line.endswith(b"\r"):
                line = line[:-1]
            if line:
                out.append(line)
            else:
                self.skipped += 1
        return out


@dataclass
class Outcome:
    """What a write did, for the summary line; every count is exact."""

    read: int = 0  # lines (or arguments) taken in, empty ones included
    skipped: int = 0  # empty lines, never sent
    written: int = 0  # messages the server acknowledged
    last_id: int = 0
    failed: int = 0  # messages in batches answered with an error: not written
    unsent: int = 0  # messages read but never sent (stopped before their turn)
    in_flight: list[int] = field(default_factory=list)  # sizes of batches sent, never answered
    signal: int = 0  # the signal that stopped the write, if one did
    error: errors.LogdError | None = None  # the first error

    def line(self) -> str:
        last = str(self.last_id) if self.last_id else "-"
        text = f"logd write: read {self.read} line{'s' if self.read != 1 else ''}, wrote {self.written}, last id {last}"
        if self.skipped:
            text += f", skipped {self.skipped} empty line{'s' if self.skipped != 1 else ''}"
        if self.failed:
            text += f", {self.failed} not written (error reply)"
        if self.unsent:
            text += f", {self.unsent} not sent"
        if self.in_flight:
            n = len(self.in_flight)
            text += (
                f"; {n} batch{'es' if n != 1 else ''} ({sum(self.in_flight)} messages) in flight "
                "may or may not have been written"
            )
        if self.signal:
            text += f" (stopped by {signal.Signals(self.signal).name})"
        return text


class LiveWriter:
    """One ``logd write`` on a connected ``Connection``: feed it stdin's fd (or a list
    of bodies) and ``run()`` it."""

    def __init__(
        self,
        connection: Connection,
        *,
        batch: int,
        batch_bytes: int,
        linger: float,
        on_ack: Callable[[range], None],
        stop_wait: float = 5.0,
        window: int = WINDOW,
    ) -> None:
        self.connection = connection
        self.max_count = batch
        self.max_bytes = batch_bytes
        self.linger = linger
        self.on_ack = on_ack
        self.stop_wait = stop_wait
        self.window = window
        self.outcome = Outcome()
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._oldest = 0.0  # when the oldest queued body arrived
        self._pending: deque[int] = deque()  # sizes of the batches in flight
        self._signals = 0

    # -- input

    def _take(self, bodies: list[bytes]) -> None:
        if bodies and not self._queue:
            self._oldest = time.monotonic()
        self._queue.extend(bodies)
        self._queued_bytes += sum(map(len, bodies))

    def _due(self, eof: bool) -> bool:
        if not self._queue:
            return False
        return (
            eof
            or len(self._queue) >= self.max_count
            or self._queued_bytes >= self.max_bytes
            or time.monotonic() >= self._oldest + self.linger
        )

    def _full(self) -> bool:
        return len(self._queue) >= self.max_count or self._queued_bytes >= self.max_bytes

    # -- output

    def _send_one(self) -> None:
        queue = self._queue
        bodies = queue[: self.max_count]
        size = sum(map(len, bodies))
        if size > self.max_bytes and len(bodies) > 1:  # trim to --batch-bytes (at least one body)
            size = k = 0
            for body in bodies:
                if k and size + len(body) > self.max_bytes:
                    break
                size += len(body)
                k += 1
            bodies = bodies[:k]
        del queue[: len(bodies)]
        self._queued_bytes -= size
        self._pending.append(len(bodies))  # before sending: a failed send may still have landed
        self.connection.send(encode_command("MSG", *bodies))

    def _take_acks(self) -> None:
        """Handle every complete reply buffered; never blocks."""
        conn = self.connection
        while self._pending:
            try:
                got = conn.poll_reply()
            except errors.LogdError as exc:
                self.outcome.failed += self._pending.popleft()  # an error reply: not written
                self.outcome.error = self.outcome.error or exc
                if isinstance(exc, errors.ProtocolError):
                    # The server stops parsing at a framing error and closes:
                    # nothing sent after it was written.
                    self.outcome.failed += sum(self._pending)
                    self._pending.clear()
                if isinstance(exc, FATAL):
                    raise  # poll_reply() has dropped the connection
                continue
            if got is NEED_DATA:
                return
            if not isinstance(got, OkId):
                raise errors.ProtocolError(f"MSG: unexpected reply {got!r}")
            count = self._pending.popleft()
            ids = range(got.id - count + 1, got.id + 1)
            self.outcome.written += count
            self.outcome.last_id = got.id
            self.on_ack(ids)

    def _receive(self) -> None:
        self.connection.receive()
        self._take_acks()

    # -- the loop

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals += 1
        self.outcome.signal = self.outcome.signal or signum

    def run(self, fd: int | None, bodies: list[bytes] | None = None) -> Outcome:
        """Write ``bodies``, or else what ``fd`` delivers until EOF or a signal.

        Raises:
            ConnectionLost: the connection failed (``outcome`` says what is known).
        """
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        splitter = LineSplitter()
        try:
            if bodies is not None:
                self.outcome.read = len(bodies)
                self._take(bodies)
                fd = None
            try:
                self._loop(fd, wake_r, splitter)
            finally:
                self.outcome.skipped = splitter.skipped
                self.outcome.unsent = len(self._queue)
                self.outcome.in_flight = list(self._pending)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for s, handler in old.items():
                signal.signal(s, handler)
            os.close(wake_r)
            os.close(wake_w)
        return self.outcome

    def _loop(self, fd: int | None, wake: int, splitter: LineSplitter) -> None:
        eof = fd is None
        sock = self.connection.fileno()  # raises ConnectionLost if not connected
        stop_at: float | None = None
        while True:
            if self._signals and stop_at is None:  # stop reading; finish what was read
                stop_at = time.monotonic() + self.stop_wait
                self._absorb(splitter.finish(), splitter)
                eof = True
            sending = self.outcome.error is None  # after an error reply, only collect the acks due
            if not sending:
                eof = True
            if self._signals > 1 or (stop_at is not None and time.monotonic() >= stop_at):
                return  # a second signal, or the bounded wait is over
            if eof and not (self._queue and sending) and not self._pending:
                return
            if sending and self._due(eof) and len(self._pending) < self.window:
                self._send_one()
                self._take_acks()
                continue
            rlist = [wake]
            if self._pending:
                rlist.append(sock)
            reading = not eof and not self._full()
            if reading:
                assert fd is not None
                rlist.append(fd)
            timeout: float | None = None
            if sending and self._queue and len(self._pending) < self.window:
                timeout = max(0.0, self._oldest + self.linger - time.monotonic())
            if stop_at is not None:
                left = max(0.0, stop_at - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            ready, _, _ = select.select(rlist, [], [], timeout)
            if wake in ready:
                try:
                    os.read(wake, 512)
                except BlockingIOError:
                    pass
            if sock in ready:
                self._receive()
            if reading and fd in ready:
                data = os.read(fd, READ_SIZE)
                if data:
                    got = splitter.feed(data)
                else:
                    got = splitter.finish()
                    eof = True
                self._absorb(got, splitter)

    def _absorb(self, got: list[bytes], splitter: LineSplitter) -> None:
        self.outcome.read += len(got) + (splitter.skipped - self.outcome.skipped)
        self.outcome.skipped = splitter.skipped
        self._take(got)
