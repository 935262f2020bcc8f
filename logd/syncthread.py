"""One thread of its own for fsync rounds, with the lightest hand-off gevent allows.

An fsync runs outside the event loop, so a slow or stuck disk stalls the
writes waiting on it, never reads, STATS or the watchdog's check (issue 11).
gevent's ``threadpool.apply`` costs ~100 us a call on these 2-core VMs (a
greenlet, a ThreadResult with its own async watcher, Python-level locks in
the worker), over and above the two thread wake-ups any hand-off needs
(~60 us here). This thread waits on a ``SimpleQueue`` (C) and wakes the hub
through one async watcher it keeps started (bench/PROFILE.rst).
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import gevent
from gevent.hub import Waiter

__all__ = ["SyncThread"]


class _Call:
    __slots__ = ("func", "done", "error")

    def __init__(self, func: Callable[[], Any]) -> None:
        self.func = func
        self.done = False
        self.error: BaseException | None = None


class SyncThread:
    """``run(func)``: call ``func`` in the thread; this greenlet waits, the others go on."""

    def __init__(self, name: str = "logd-fsync") -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._waiter: Waiter[Any] | None = None
        # Started for good: a send while nobody waits is kept, never lost
        # (libev forgets a send to a watcher started after it). Unref'd
        # between calls: an idle thread does not keep the loop alive.
        self._finished = gevent.get_hub().loop.async_(ref=False)
        self._finished.start(self._wake)

    def run(self, func: Callable[[], Any]) -> None:
        """One call at a time (the callers hold a lock).

        Raises:
            Whatever ``func`` raised.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        call = _Call(func)
        self._calls.put(call)
        self._finished.ref = True  # type: ignore[attr-defined]  # in flight: the loop stays alive (no LoopExit)
        try:
            while not call.done:  # a wake-up left by an earlier call that was abandoned
                self._waiter = Waiter()
                try:
                    self._waiter.get()
                finally:
                    self._waiter = None
        finally:
            self._finished.ref = False  # type: ignore[attr-defined]
        if call.error is not None:
            raise call.error

    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.switch(None)

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                call.func()
            except BaseException as exc:  # handed to the waiting greenlet
                call.error = exc
            call.done = True
            self._finished.send()

    def stop(self) -> None:
        """End the thread after the call it runs, if any."""
        if self._thread is not None:
            self._calls.put(None)
            self._thread = None
