"""The process base for the server and the follower, after gunicorn's Arbiter.

``run()`` is the life of the process, in the main greenlet::

    install signal handlers -> startup() -> READY=1 -> main loop -> STOPPING=1 -> shutdown() -> exit status

Signals are only recorded: CPython writes each one's number to a wake-up
pipe (``signal.set_wakeup_fd``), in the order they arrive, like the
Arbiter's ``SIG_QUEUE`` and ``PIPE`` in one. ``dispatch()`` reads them and
runs one handler per signal, ``handle_term``, ``handle_int``,
``handle_hup``, in that order, in the main greenlet. The main loop
dispatches as soon as one arrives; a long ``startup()`` step dispatches at
its progress points (the daemon's recovery does, every 2 s), so SIGTERM
stops a start that is still verifying the log.

Neither ``gevent.signal_handler`` nor a Python-level handler that queues
would do: both run only once the hub runs (so not while recovery keeps it
busy), and the second not until an idle hub wakes for something else. The
wake-up fd is written by the C-level handler the moment the signal arrives.

Stopping is an exception: ``Halt(exit_status)``, a ``BaseException`` (as the
Arbiter's ``HaltServer``) so that no ``except Exception`` swallows it. Raise
it from the main greenlet; other greenlets call ``request_halt()``, which
wakes the main loop to raise it there. The follower adds its own exit codes.

Notify hooks (``self.notify``) speak sd_notify (systemd.py): READY, STATUS,
EXTEND_TIMEOUT_USEC, WATCHDOG and STOPPING. With ``$WATCHDOG_USEC`` set the
main loop sends ``WATCHDOG=1`` every half interval: it proves that the main
greenlet gets to run, so a hub stuck in a blocking call is caught.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from types import FrameType
from typing import Callable

import gevent.socket
import structlog

from . import systemd

__all__ = ["EXIT_OK", "EXIT_FAILURE", "Halt", "Notifier", "Process"]

log = structlog.get_logger("logd.process")

EXIT_OK = 0
EXIT_FAILURE = 1  # could not start, or failed while running (the error is logged)


class Halt(BaseException):
    """Stop the process with ``exit_status``; ``reason`` says why, for the log."""

    def __init__(self, exit_status: int = EXIT_OK, reason: str = "") -> None:
        super().__init__(reason or f"exit status {exit_status}")
        self.exit_status = exit_status
        self.reason = reason


class Notifier:
    """What the process tells its service manager; each method is one sd_notify message."""

    def __init__(self, send: Callable[..., bool] = systemd.notify) -> None:
        self._send = send

    def ready(self, status: str = "") -> bool:
        return self._send("READY=1", f"STATUS={status}") if status else self._send("READY=1")

    def status(self, text: str) -> bool:
        return self._send(f"STATUS={text}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start (or stop) times out."""
        return self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def watchdog(self) -> bool:
        return self._send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self._send("STOPPING=1", f"STATUS={status}") if status else self._send("STOPPING=1")


class Process:
    """Subclasses override ``startup``, ``shutdown`` and, if they like, the handlers."""

    SIGNALS: dict[int, str] = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGHUP: "hup"}

    def __init__(self, notify: Notifier | None = None) -> None:
        self.notify = notify or Notifier()
        self._signals: deque[int] = deque()
        self._previous: dict[int, object] = {}
        self._wake_r = self._wake_w = -1
        self._previous_wakeup = -1
        self._halt: Halt | None = None

    # -- the subclass's part ----------------------------------------------------------

    def startup(self) -> None:
        """Get ready to serve; may take long (call ``dispatch()`` at progress points)."""

    def status(self) -> str:
        """The STATUS= text sent with READY=1."""
        return ""

    def shutdown(self, halt: Halt) -> None:
        """Stop; called after ``startup`` returned or raised ``Halt``."""

    def handle_term(self) -> None:
        raise Halt(EXIT_OK, "SIGTERM")

    def handle_int(self) -> None:
        raise Halt(EXIT_OK, "SIGINT")

    def handle_hup(self) -> None:
        self.reopen()

    def reopen(self) -> None:
        """SIGHUP: reopen log files. logd logs to stderr, whose other end (the
        journal, a pipe, a file the shell opened) we cannot reopen: say so."""
        log.info("reopen", logs="stderr", reopened=0)

    # -- the machinery ----------------------------------------------------------------

    def run(self) -> int:
        """The whole life of the process; returns its exit status."""
        self.install_signals()
        try:
            try:
                self.startup()
                self.dispatch()
                self.notify.ready(self.status())
                self.main_loop()
            except Halt as exc:
                halt = exc
            self.notify.stopping()
            self.shutdown(halt)
            return halt.exit_status
        finally:
            self.restore_signals()

    def main_loop(self) -> None:
        """Wait for signals and halt requests, and feed the watchdog; until ``Halt``."""
        interval = systemd.watchdog_interval()
        period = interval / 2 if interval else None
        next_ping = time.monotonic() + period if period else None
        if period:
            self.notify.watchdog()
        while True:
            self.wait(None if next_ping is None else max(0.0, next_ping - time.monotonic()))
            self.dispatch()
            if next_ping is not None and period is not None and time.monotonic() >= next_ping:
                self.notify.watchdog()
                next_ping = time.monotonic() + period

    def install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # CPython's C-level handler writes each signal's number to this fd at
        # once, in arrival order; a Python-level handler would run only when
        # the hub next returns to Python, which an idle hub may not do for long.
        self._previous_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, _recorded)

    def restore_signals(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()
        if self._wake_w >= 0:
            signal.set_wakeup_fd(self._previous_wakeup)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _wakeup(self) -> None:
        try:
            os.write(self._wake_w, b"\0")  # not a signal number
        except OSError:  # the pipe is full (it is woken already) or closed
            pass

    def request_halt(self, exit_status: int = EXIT_OK, reason: str = "") -> None:
        """Stop the process from any greenlet: the main loop raises ``Halt`` for it."""
        if self._halt is None:
            self._halt = Halt(exit_status, reason)
        self._wakeup()

    def wait(self, timeout: float | None) -> None:
        """Until a signal or a halt request arrives, or ``timeout`` seconds pass."""
        if self._signals or self._halt is not None:
            return
        try:
            gevent.socket.wait_read(self._wake_r, timeout)
        except TimeoutError:
            pass

    def _collect(self) -> None:
        while True:
            try:
                data = os.read(self._wake_r, 512)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self._signals.extend(b for b in data if b in self.SIGNALS)

    def dispatch(self) -> None:
        """Run the handler of each signal recorded so far, here, in order; then a requested halt.

        Raises:
            Halt: from a handler, or requested by ``request_halt``.
        """
        self._collect()
        while self._signals:
            signum = self._signals.popleft()
            getattr(self, f"handle_{self.SIGNALS[signum]}")()
        if self._halt is not None:
            raise self._halt


def _recorded(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the wake-up fd has the signal already.

    Installing it replaces the default action (SIGTERM and SIGHUP would kill
    the process; SIGINT would raise KeyboardInterrupt anywhere).
    """
