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
EXTEND_TIMEOUT_USEC, WATCHDOG and STOPPING. READY=1 goes out once
``startup()`` returned, or, for a subclass that sets ``READY_AT_STARTUP =
False`` (the follower), once it calls ``set_ready()``. The main loop sends
``STATUS=`` when ``status()`` changed, checked once a second (so at most
one a second, however fast the head moves). With
``$WATCHDOG_USEC`` set it sends ``WATCHDOG=1`` every half interval: that
proves the main greenlet gets to run (a hub stuck in a blocking call is
caught), and before each ping it asks ``stuck()``: a reason there (an fsync
in flight too long, ``InFlight``) withholds the ping, so systemd restarts a
process whose writer is wedged.
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

__all__ = ["EXIT_OK", "EXIT_FAILURE", "Halt", "InFlight", "Notifier", "Process", "STATUS_EVERY"]

log = structlog.get_logger("logd.process")

EXIT_OK = 0
EXIT_FAILURE = 1  # could not start, or failed while running (the error is logged)
STATUS_EVERY = 1.0  # seconds: the bound on STATUS= updates (systemctl status needs no more)


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


class InFlight:
    """Wraps a blocking call (an fsync) and knows how long the oldest running one has run.

    The calls run in the hub's threadpool; the watchdog asks from the main
    greenlet. Each call keeps its start time in a dict by a token of its own:
    a dict's set and delete are atomic under the GIL, so no lock is needed.
    """

    def __init__(self, call: Callable[[int], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._call = call
        self._clock = clock
        self._started: dict[object, float] = {}

    def __call__(self, fd: int) -> None:
        token = object()
        self._started[token] = self._clock()
        try:
            self._call(fd)
        finally:
            del self._started[token]

    def oldest(self) -> float:
        """Seconds the longest-running call has been running; 0.0 when none runs."""
        started = list(self._started.values())
        return self._clock() - min(started) if started else 0.0


class Process:
    """Subclasses override ``startup``, ``shutdown`` and, if they like, the handlers."""

    SIGNALS: dict[int, str] = {signal.SIGTERM: "term", signal.SIGINT: "int", signal.SIGHUP: "hup"}
    READY_AT_STARTUP = True  # False: the subclass calls set_ready() when it is

    def __init__(self, notify: Notifier | None = None) -> None:
        self.notify = notify or Notifier()
        self._signals: deque[int] = deque()
        self._previous: dict[int, object] = {}
        self._wake_r = self._wake_w = -1
        self._previous_wakeup = -1
        self._halt: Halt | None = None
        self._ready = self._ready_sent = False
        self._status_sent = ""
        self._status_at = 0.0  # monotonic time of the last STATUS= check
        self._withheld: str | None = None  # why watchdog pings are withheld, if they are

    # -- the subclass's part ----------------------------------------------------------

    def startup(self) -> None:
        """Get ready to serve; may take long (call ``dispatch()`` at progress points)."""

    def status(self) -> str:
        """The STATUS= text: sent with READY=1, then again whenever it changed."""
        return ""

    def stuck(self) -> str | None:
        """Why the process cannot do its work (watchdog pings are withheld), or None."""
        return None

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
                if self.READY_AT_STARTUP:
                    self._ready = True
                self.main_loop()
            except Halt as exc:
                halt = exc
            self.notify.stopping()
            self.shutdown(halt)
            return halt.exit_status
        finally:
            self.restore_signals()

    def set_ready(self) -> None:
        """The process serves now: the main loop sends READY=1 (once; from any greenlet)."""
        if not self._ready:
            self._ready = True
            self._wakeup()

    def main_loop(self) -> None:
        """Wait for signals and halt requests; send READY, STATUS and the watchdog's pings; until ``Halt``."""
        interval = systemd.watchdog_interval()
        period = interval / 2 if interval else None
        next_ping = time.monotonic()
        while True:
            self._notify_ready_and_status()
            now = time.monotonic()
            if period is not None and now >= next_ping:
                self._ping()
                next_ping = now + period
            due = self._status_at + STATUS_EVERY
            if period is not None:
                due = min(due, next_ping)
            self.wait(max(0.0, due - time.monotonic()))
            self.dispatch()

    def _notify_ready_and_status(self) -> None:
        now = time.monotonic()
        if self._ready and not self._ready_sent:
            self._ready_sent = True
            self._status_sent, self._status_at = self.status(), now
            self.notify.ready(self._status_sent)
        elif now - self._status_at >= STATUS_EVERY:
            self._status_at = now
            text = self.status()
            if text != self._status_sent:
                self._status_sent = text
                self.notify.status(text)

    def _ping(self) -> None:
        why = self.stuck()
        if why is None:
            if self._withheld is not None:
                log.info("watchdog_resumed", was=self._withheld)
                self._withheld = None
            self.notify.watchdog()
        elif self._withheld is None:
            self._withheld = why
            log.error("watchdog_withheld", reason=why,
                      hint="systemd restarts the process when WatchdogSec= passes without a ping")

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
