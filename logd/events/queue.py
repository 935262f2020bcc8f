"""The event queue: every command from every listener, one consumer, in order.

``EventQueue.submit()`` puts a command on one queue; a single consumer
greenlet runs ``Handlers.handle()`` for each, so commands take effect in the
order received, whichever listener (TCP, unix socket) they came from.
Servers are attributes of the queue (``queue.servers``), not the other way
round.

Handlers never yield to the hub (no gevent I/O inside them). So when the
queue is empty, ``submit`` runs the command right away in the caller's
greenlet: nothing else can run meanwhile, so the order is exactly the one the
consumer would give, minus two greenlet switches per command (W2 latency).

Commit. A MSG is appended at once, but its reply may wait: under
``--fsync always`` the committer greenlet runs fdatasync in a thread of its
own (``syncthread.py``) and releases every reply waiting at or below the synced id, so one fsync
covers every append that arrived while the previous one ran (group commit).
Under ``interval`` and ``never`` a MSG is committed as soon as it is
written. Readers see committed ids only: the queue publishes each commit to
its commit source (``queue.commits``, ``commit.py``), which wakes
tailing readers; streams depend on that and on the log, not on the queue.

REFUSE replies ``WaitSync``: the queue fsyncs everything written (under
every policy, ``never`` included: a planned failover hands over a durable
log) and then sends the reply. One fsync round runs at a time
(``_sync_lock``), whichever loop or REFUSE asks for it.

``Handlers`` (``handlers.py``) is plain code callable without the queue or gevent, for tests.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

import gevent
import structlog
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from gevent.queue import Queue

from .. import __version__
from .. import protocol as p
from .. import stats as st
from ..config import FsyncMode, FsyncPolicy
from ..errors import LogdError, ServerError, ShuttingDown
from ..log import Log
from ..syncthread import SyncThread
from .acks import Acks, acks_off_stats
from .commit import Commits
from .handlers import Handlers, Peer, WaitCommit, WaitSync

__all__ = ["EventQueue"]

log = structlog.get_logger("logd.events")


_STOP = object()
_NAMES: dict[type, str] = {}  # command class -> its name in STATS (cmd_msg), made once


class EventQueue:
    """One ordered consumer for all commands; see the module docstring."""

    def __init__(self, log_: Log, fsync: FsyncPolicy, stats: st.Stats, min_acks: int = 0,
                 ack_timeout: float = 5.0) -> None:
        self.log = log_
        self.fsync = fsync
        self.stats = stats
        self.handlers = Handlers(log_, fsync, stats, extra_stats=self._queue_stats)
        self.servers: list[Any] = []
        committed = log_.head() if fsync.mode is not FsyncMode.ALWAYS else log_.synced_head()
        self.commits = Commits(committed, log_.position(committed + 1))
        # --min-acks (acks.py): readers follow the acknowledged watermark; REPLICATE, ``commits``.
        self.acks = self.handlers.acks = (Acks(min_acks, ack_timeout, self.commits, self.handlers.followers,
                                               log_.position, stats) if min_acks else None)
        self.visible = self.acks.visible if self.acks is not None else self.commits
        self.ack_timeout = ack_timeout
        self._queue: Queue = Queue()
        self._waiters: deque[tuple[int, AsyncResult, Any]] = deque()
        self._dirty = Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._immediate = fsync.mode is not FsyncMode.ALWAYS
        self._closed = False
        self._running = False  # a handler is running (they never yield; this guards it)
        self._readers_before: list[Log] = []  # read-only logs before a promotion (use_log)
        self._sync_lock = Semaphore()  # one fsync round at a time (a SyncPoint is not reentrant)
        self._syncer = SyncThread()  # where the fsyncs run (syncthread.py)

    def start(self) -> None:
        self._greenlets.append(gevent.spawn(self._consume))
        if self.fsync.mode is FsyncMode.ALWAYS:
            self._greenlets.append(gevent.spawn(self._sync_loop))
        elif self.fsync.mode is FsyncMode.INTERVAL:
            self._greenlets.append(gevent.spawn(self._interval_loop))

    def submit(self, command: p.Command, peer: Peer) -> bytes | AsyncResult:
        """Run or queue a command: its reply line when that is ready at once,
        else an AsyncResult that gets the reply.

        When nothing is queued, the command runs right here instead of one
        greenlet switch later: under gevent nothing else runs meanwhile, so
        the order is the same as if the consumer had run it.
        """
        if self._closed:
            return p.encode_error(ShuttingDown("server is shutting down"))
        if self._queue.empty() and not self._running:
            return self._run(command, peer, None)
        result: AsyncResult[Any] = AsyncResult()
        self._queue.put((command, peer, result))
        return result

    def _queue_stats(self) -> dict[str, Any]:
        listen = []
        for server in self.servers:
            addr = server.address
            listen.append(addr if isinstance(addr, str) else f"{addr[0]}:{addr[1]}")
        return {
            "queue_depth": self._queue.qsize(),
            "commit_waiters": len(self._waiters),
            "version": __version__,
            "pid": os.getpid(),
            "data_dir": getattr(self.log, "directory", ""),
            "listen": " ".join(listen),
            **(self.acks.stats_() if self.acks is not None
               else acks_off_stats(self.commits.committed, self.ack_timeout)),
        }

    # -- the consumer ---------------------------------------------------------------

    def _consume(self) -> None:
        queue = self._queue
        while True:
            item = queue.get()
            if item is _STOP:
                return
            self._run(*item)

    def _run(self, command: p.Command, peer: Peer, result: AsyncResult | None) -> bytes | AsyncResult:
        """Run one command. Its reply goes into ``result``; with None (submit,
        nothing queued) a reply line ready at once is returned as it is, and
        anything else in a new AsyncResult."""
        name = _NAMES.get(type(command)) or _NAMES.setdefault(type(command), type(command).__name__.lower())
        self._running = True
        try:
            reply = self.handlers.handle(command, peer)
        except LogdError as exc:
            self.stats.command(name, failed=True)
            reply = p.encode_error(exc)
        except Exception:
            self.stats.command(name, failed=True)
            log.exception("command_failed", command=name)
            reply = p.encode_error(ServerError("internal error"))
        else:
            self.stats.command(name)
        finally:
            self._running = False
        if type(reply) is WaitCommit and reply.id <= self.commits.committed:
            reply = reply.reply
        if isinstance(reply, bytes) and result is None:
            self._commit_written()
            return reply
        if result is None:
            result = AsyncResult()
        if type(reply) is WaitSync:
            gevent.spawn(self._sync_then, result, reply.reply)
        elif type(reply) is WaitCommit:
            self._waiters.append((reply.id, result, reply.reply))
            self._dirty.set()
        else:
            result.set(reply)
        self._commit_written()
        return result

    def _commit_written(self) -> None:
        # Commit written messages once the queue is drained: one wake-up of
        # the tail readers covers a whole burst of MSGs.
        if self._immediate and self.commits.committed < self.log.head() and self._queue.empty():
            self._publish(self.log.head())

    def use_log(self, log_: Log, fsync: FsyncPolicy) -> None:
        """A read replica promoted (ACCEPT): write ``log_`` from now on, under
        ``fsync``. The old read-only log stays open for the cursors streams
        already hold, refreshed before each publish so they see what is new."""
        old = self.log
        self._readers_before.append(old)
        self.log = self.handlers.log = log_
        self.fsync = self.handlers.fsync = fsync
        self._immediate = fsync.mode is not FsyncMode.ALWAYS
        if fsync.mode is FsyncMode.ALWAYS:
            self._greenlets.append(gevent.spawn(self._sync_loop))
        elif fsync.mode is FsyncMode.INTERVAL:
            self._greenlets.append(gevent.spawn(self._interval_loop))

    def close_old_readers(self) -> None:
        for reader in self._readers_before:
            reader.close()
        self._readers_before.clear()

    def _publish(self, head: int) -> None:
        """Ids up to ``head`` are committed: release replies, wake readers."""
        for reader in self._readers_before:
            try:
                reader.refresh()  # type: ignore[attr-defined]
            except Exception:  # a stale view only delays its old streams
                log.exception("old_reader_refresh_failed")
        # Wake tail readers first: gevent runs wake-ups in order, so records
        # reach readers before the writers' acks go out (W5 latency).
        self.commits.publish(head, self.log.position(head + 1))
        waiters = self._waiters
        while waiters and waiters[0][0] <= head:
            _, result, reply = waiters.popleft()
            result.set(reply)

    # -- durability -------------------------------------------------------------------

    def _sync_then(self, result: AsyncResult, reply: bytes) -> None:
        """REFUSE's reply, once everything written so far is fsynced."""
        log_ = self.log
        if log_.head() > log_.synced_head() and not self._sync_once():
            result.set(p.encode_error(getattr(log_, "failed", None) or ServerError("fsync failed")))
            return
        if self.fsync.mode is FsyncMode.ALWAYS:
            self._publish(log_.synced_head())
        result.set(reply)

    def _sync_once(self) -> bool:
        """One fsync round; returns False when writes are now stopped."""
        with self._sync_lock:
            return self._sync_round()

    def _sync_round(self) -> bool:
        point = self.log.begin_sync()
        began = time.monotonic()
        try:
            self._syncer.run(point.run)
        except Exception as exc:
            self.stats.incr(st.FSYNC_ERRORS)
            failure = self.log.fail_sync(exc)
            log.error("fsync_failed", error=str(exc))
            reply = p.encode_error(failure)
            while self._waiters:
                _, result, _ = self._waiters.popleft()
                result.set(reply)
            return False
        self.log.end_sync(point)
        self.stats.incr(st.FSYNCS)
        self.stats.last_fsync_time = time.time()
        self.stats.last_fsync_seconds = time.monotonic() - began
        return True

    def _sync_loop(self) -> None:
        log_ = self.log
        while True:
            self._dirty.wait()
            self._dirty.clear()
            if log_.head() <= log_.synced_head():
                if self._waiters:  # e.g. HEAD waiting on ids synced meanwhile
                    self._publish(log_.synced_head())
                continue
            if not self._sync_once():
                return
            self._publish(log_.synced_head())

    def _interval_loop(self) -> None:
        period = self.fsync.interval_ms / 1000.0
        while True:
            gevent.sleep(period)
            if self.log.head() > self.log.synced_head():
                if not self._sync_once():
                    return

    # -- stopping ---------------------------------------------------------------------

    def drain(self, timeout: float) -> None:
        """Stop taking writes, let queued commands finish, release every waiter."""
        self.handlers.stopping = True
        deadline = time.monotonic() + timeout
        while (not self._queue.empty() or self._waiters) and time.monotonic() < deadline:
            self._dirty.set()
            gevent.sleep(0.005)
        if self.acks is not None:
            self.acks.settle(max(0.0, min(self.acks.timeout or timeout, deadline - time.monotonic())))
            self.acks.stop()
        self.commits.stop()

    def stop(self) -> None:
        self._closed = True
        self._queue.put(_STOP)
        for g in self._greenlets[1:]:
            g.kill()
        self._syncer.stop()
