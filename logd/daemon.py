"""The server process: bind, recover the log, serve; stop gracefully (a ``Process``, process.py).

Start, in the order systemd can follow: bind the addresses first (a taken
port fails at once, naming it); then recovery, a step of its own that
reports progress (``STATUS=`` and ``EXTEND_TIMEOUT_USEC=`` with each
``verifying`` line, every 2 s) and can be stopped by SIGTERM; then the
listeners start, ``listening`` is logged, and READY=1 goes out.

Running, the process base sends ``STATUS=`` (``status()``: role, epoch,
head, followers and their lag; a replica's primary, link and lag) when it
changed, and ``WATCHDOG=1`` unless ``stuck()``: an fsync in flight, or
written ids not synced, for ``--stall-timeout`` (docs/server.rst, "systemd").

Stopping (SIGTERM, SIGINT or SHUTDOWN), after gunicorn's GeventWorker and
Redis's shutdown: stop accepting connections; stop accepting writes and let
the queue finish what is in flight (every MSG already received is answered);
end streams with ``ERR SHUTDOWN``; flush and close connections; fsync, save
the indexes and leave the clean marker; exit 0. The work runs in the main
greenlet, which the signal or SHUTDOWN only wakes.

A read replica (``--refuse``) opens the directory with the read-only
``LogReader`` instead: no lock, no recovery, no retention, nothing written,
ever (so its stop has nothing to fsync or mark). Its commits come from a
``Watcher`` (watch.py) that refreshes the reader when the directory changes;
MSG gets ``ERR_CLIENT REFUSED`` naming the primary that the follower's status file
names; the queue runs with no fsync loop, since this process writes nothing.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import time
from typing import Any

import gevent
import structlog
from gevent.event import Event

from . import faults, peers, speedups
from .admin import AdminPolicy, load_token
from .config import FsyncMode, FsyncPolicy, ServerConfig
from .errors import LogdError
from .events import EventQueue
from .events.role import REFUSING, Role as RoleState
from .log.file import PROGRESS_EVERY, FileLog
from .log.meta import META_FILE
from .log.reader import LogReader
from .metrics import MetricsServer, ServerCollector
from .process import EXIT_FAILURE, Halt, InFlight, Process
from .server import Listener, tcp_listener, unix_listener
from .stats import Stats
from .watch import Watcher

__all__ = ["Daemon"]

log = structlog.get_logger("logd.daemon")

# While recovery verifies, each progress line asks systemd for this much more
# start time (it only matters past TimeoutStartSec=): lines come every
# PROGRESS_EVERY seconds, so a few missed ones are tolerated.
RECOVERY_EXTEND = 5 * PROGRESS_EVERY


FD_RESERVE = 64  # descriptors besides clients: partitions, index, listeners, logs


def raise_fd_limit(max_clients: int) -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard one (issue 7, item 7).

    systemd's default soft limit is 1,024, below the default --max-clients.
    Warn rather than refuse: the server stays useful, and past the limit new
    clients get an error line (server.py), not a hang.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_clients + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (OSError, ValueError) as exc:
            log.warning("fd_limit_not_raised", error=str(exc))
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning("fd_limit_low", soft=soft, hard=hard, max_clients=max_clients, needed=want,
                    serves_about=max(0, soft - FD_RESERVE),
                    hint="raise the hard limit (LimitNOFILE= under systemd, ulimit -Hn) "
                    "or lower --max-clients")


class Daemon(Process):
    def __init__(self, config: ServerConfig) -> None:
        """Nothing happens until ``run()``: its startup binds, recovers, serves."""
        super().__init__()
        self.config = config
        self.stats = Stats()
        self._socks: list[socket.socket] = []
        self._unix_id: tuple[int, int] | None = None
        self.log: FileLog | LogReader | None = None
        self.watcher: Watcher | None = None
        self.queue: EventQueue | None = None
        self.listeners: list[Listener] = []
        self.metrics: MetricsServer | None = None
        self._stopping = Event()
        self._queue_stats: Any = dict
        self._fsyncs = InFlight(faults.fsync_func())  # the watchdog asks it how long one has run
        self._unsynced_since: tuple[int, float] | None = None  # (synced head, since when) while behind

    def startup(self) -> None:
        """Bind, recover the log, start serving.

        Raises:
            Halt: EXIT_FAILURE, after logging ``startup_failed``, when an
                address cannot be bound or the log cannot be opened.
        """
        config = self.config
        raise_fd_limit(config.max_clients)
        existed = False  # the directory had a log before this start (its meta file)
        try:
            # Addresses first (issue 7 item 10): a taken port fails at once,
            # naming it, not after minutes of verification. Connections made
            # while the log opens wait in the listen backlog.
            try:
                token = load_token(config.admin_token, config.admin_token_file)
            except ValueError as exc:
                raise OSError(str(exc)) from None
            self._socks = self._bind()
            if config.metrics is not None:
                self.metrics = MetricsServer(config.metrics)
            self.notify.status(f"opening the log in {os.path.abspath(config.data_dir)}")
            if config.refuse:
                self.log, self.watcher = self._open_replica()
            else:
                existed = os.path.exists(os.path.join(config.data_dir, META_FILE))
                self.log = self._open_writer()
        except (LogdError, OSError) as exc:
            log.error("startup_failed", error=str(exc))
            raise Halt(EXIT_FAILURE, "startup failed") from exc
        # A replica writes nothing: no committer, no fsync loop; commits come from the watcher.
        fsync = FsyncPolicy(FsyncMode.NEVER) if config.refuse else config.fsync
        # --min-acks is a primary's: a read replica has no followers to wait for.
        min_acks = 0 if config.refuse else config.min_acks
        self.queue = EventQueue(self.log, fsync, self.stats, min_acks, config.ack_timeout)
        handlers = self.queue.handlers
        handlers.on_shutdown = self.request_stop
        handlers.admin = AdminPolicy(config.admin_from, token)
        queue_stats, watcher = handlers.extra_stats, self.watcher
        self._queue_stats = queue_stats
        if watcher is not None:
            handlers.refusing = watcher.refused
            handlers.promote = self.promote
            handlers.extra_stats = lambda: {**queue_stats(), **watcher.stats()}
        else:
            handlers.extra_stats = queue_stats
        if isinstance(self.log, FileLog) and existed and not self.log.recovered_clean:
            try:
                self._check_peers(handlers.role)
            except LogdError as exc:  # the refusing role could not be persisted
                log.error("startup_failed", error=str(exc))
                raise Halt(EXIT_FAILURE, "startup failed") from exc
        whoami = handlers.role.whoami()
        role = whoami.role
        if role == REFUSING:
            log.warning("starting_refusing", reason=f"{whoami.reason}; send ACCEPT to take writes",
                        new_primary=whoami.new_primary, epoch=whoami.epoch)
        self.listeners = [Listener(self.queue, config, s) for s in self._socks]
        if self.metrics is not None:
            self.metrics.serve(ServerCollector(handlers.collect_stats, handlers.followers.values))
        self.queue.start()
        if self.watcher is not None:
            self.watcher.start(self.queue.commits)
        elif config.retain_bytes or config.retain_age:
            gevent.spawn(self._retention_loop)
        for listener in self.listeners:
            listener.start()
            if listener.is_unix:
                log.info("listening", unix=config.unix)
            else:
                host, port = listener.address[:2]
                extra = {"watch": self.watcher.mode} if self.watcher is not None else {}
                log.info("listening", host=host, port=port, data_dir=self.log.directory,
                         fsync=str(config.fsync), role=role, epoch=whoami.epoch,
                         speedups=speedups.IMPLEMENTATION, **extra)

    def _check_peers(self, role: RoleState) -> None:
        """After an unclean stop, before any write: ask the known peers for their
        epoch (peers.py), and refuse, persisted, if one is higher or none answers."""
        meta = role.meta
        if meta is None or role.refusing:  # refusing already: an ACCEPT is the operator's call
            return
        addresses = list(dict.fromkeys((*meta.followers, *self.config.peer)))
        if not addresses:
            return
        timeout = self.config.peer_timeout
        log.warning("peer_check", reason="no clean marker: the last stop was not clean", epoch=meta.epoch,
                    peers=addresses, timeout=timeout)
        self.notify.status(f"asking {len(addresses)} peer(s) for their epoch (unclean restart)")
        pool = gevent.get_hub().threadpool
        asks = [pool.spawn(peers.ask, a, timeout) for a in addresses]
        gevent.wait(asks, timeout=timeout + 0.5)  # each ask is bounded by timeout itself
        answers: list[peers.Answer] = []
        for g, address in zip(asks, addresses):
            got = g.value if g.ready() and g.successful() else None
            answers.append(got if isinstance(got, peers.Answer) else peers.no_answer(address, timeout))
        for answer in answers:
            log.info("peer_answer", peer=answer.address, role=answer.role, epoch=answer.epoch,
                     error=answer.error)
        verdict = peers.decide(meta.epoch, answers, timeout)
        if not verdict.refuse:
            log.info("peer_check_passed", epoch=meta.epoch,
                     answered=[a.address for a in answers if a.answered])
            return
        if verdict.higher is not None:
            role.higher_epoch_seen = f"{verdict.higher.epoch} from {verdict.higher.address}"
        role.refuse(verdict.new_primary, verdict.reason)  # persisted: StorageError fails the start
        log.error("peer_check_refusing", reason=verdict.reason, new_primary=verdict.new_primary,
                  epoch=meta.epoch)

    def _open_writer(self) -> FileLog:
        config = self.config
        return FileLog(
            config.data_dir,
            partition_size=config.partition_size,
            index_interval=config.index_interval,
            fsync=config.fsync.mode is not FsyncMode.NEVER,
            fsync_func=self._fsyncs,
            on_fsync=self.metrics.fsync_seconds.observe if self.metrics is not None else None,
            verify=config.verify_on_start,
            allow_corrupt=config.allow_corrupt,
            on_progress=self._recovery_progress,
            progress_every=faults.progress_every(),
        )

    def _open_replica(self) -> tuple[LogReader, Watcher]:
        """The directory read-only (no lock, no repair: half a MSG a writer is
        still writing is simply not visible yet), and what watches it."""
        config = self.config
        reader = LogReader(config.data_dir, index_interval=config.index_interval)
        try:
            watcher = Watcher(reader, config.watch, config.watch_interval, on_gone=self._directory_gone)
        except BaseException:
            reader.close()
            raise
        log.info("log_opened", directory=reader.directory, read_only=True, first_id=reader.first_id(),
                 head=reader.head(), partitions=len(reader.partitions()),
                 history=reader.meta.history if reader.meta else "")
        return reader, watcher

    def promote(self) -> None:
        """ACCEPT on a read replica: open its directory for writing in place of
        the reader (the handler then starts the new epoch). Runs in the queue's
        greenlet; the open (lock, recovery of the tail) blocks it meanwhile.

        Raises:
            DirectoryLocked: a follower (or another writer) holds the lock; it
                names the holder and nothing has changed.
            StorageError: the open failed; nothing has changed.
        """
        assert self.queue is not None and self.watcher is not None
        writer = self._open_writer()  # raises before anything changes
        self.watcher.stop()
        self.watcher = None
        handlers = self.queue.handlers
        self.queue.use_log(writer, self.config.fsync)
        self.log = writer
        handlers.role = RoleState(writer)
        handlers.role.refusing, handlers.role.reason = True, "promoting a read replica"
        handlers.promote = None
        handlers.extra_stats = self._queue_stats
        log.warning("replica_promoted", directory=writer.directory, head=writer.head())
        if self.config.retain_bytes or self.config.retain_age:
            gevent.spawn(self._retention_loop)

    def _directory_gone(self, why: str) -> None:
        self.request_halt(EXIT_FAILURE, why)

    def _recovery_progress(self, fields: dict[str, object]) -> None:
        self.notify.extend_timeout(RECOVERY_EXTEND)
        self.notify.status(f"verifying partition {fields['partition']} "
                           f"({fields['verified_mib']} of {fields['total_mib']} MiB)")
        self.dispatch()  # a SIGTERM now stops the start: Halt leaves the open (file.py allows it)

    def status(self) -> str:
        """One line for ``systemctl status``."""
        assert self.log is not None and self.queue is not None
        head = self.log.head()
        if self.watcher is not None:
            rs = self.watcher.stats()
            lag = f"lag {rs['lag_ids']} ids" if rs["lag_ids"] != -1 else "lag unknown"
            return (f"read replica of {rs['primary'] or 'an unknown primary'}: link {rs['link']}, "
                    f"head {head}, {lag}")
        flog = self.log
        assert isinstance(flog, FileLog)
        text = f"primary epoch {flog.meta.epochs[-1][0]}: head {head}, synced {flog.synced_head()}"
        failed = flog.failed
        if failed is not None:
            text += f", WRITES STOPPED ({failed})"
        followers = sorted(self.queue.handlers.followers.values(), key=lambda f: f.since)
        if not followers:
            return text + ", no followers"
        shown = [f"{f.name or f.addr} lag {max(0, head - f.written[2])}" for f in followers[:3]]
        more = f" and {len(followers) - 3} more" if len(followers) > 3 else ""
        return text + f", {len(followers)} follower{'s' if len(followers) > 1 else ''}: " + ", ".join(shown) + more

    def stuck(self) -> str | None:
        """The writer is wedged: an fsync in flight, or written ids left unsynced, past --stall-timeout."""
        flog, bound = self.log, self.config.stall_timeout
        if not isinstance(flog, FileLog) or self.config.fsync.mode is FsyncMode.NEVER:
            return None
        running = self._fsyncs.oldest()
        if running > bound:
            return f"an fsync has been running for {running:.1f}s"
        if flog.failed is not None:  # writes stopped on purpose (fsyncgate): reads still served
            return None
        synced, now = flog.synced_head(), time.monotonic()
        if flog.head() <= synced:
            self._unsynced_since = None
            return None
        if self._unsynced_since is None or self._unsynced_since[0] != synced:
            self._unsynced_since = (synced, now)
        late = now - self._unsynced_since[1]
        allowed = bound + self.config.fsync.interval_ms / 1000
        if late > allowed:
            return f"ids after {synced} written {late:.1f}s ago and not synced yet"
        return None

    def _bind(self) -> list[socket.socket]:
        """The listening sockets, or OSError naming the address that failed."""
        config = self.config
        try:
            socks = [tcp_listener(config.host, config.port)]
        except OSError as exc:
            where = f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"address {where} is already in use") from exc
            raise OSError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        if config.unix:
            try:
                socks.append(unix_listener(config.unix))
            except OSError:
                socks[0].close()
                raise
            st = os.stat(config.unix)
            self._unix_id = (st.st_dev, st.st_ino)
        return socks

    def _remove_unix_socket(self) -> None:
        """Unlink our unix socket, unless the path now names another one."""
        if self._unix_id is None or self.config.unix is None:
            return
        try:
            st = os.stat(self.config.unix)
            if (st.st_dev, st.st_ino) == self._unix_id:
                os.unlink(self.config.unix)
        except OSError:
            pass
        self._unix_id = None

    def request_stop(self) -> None:
        """SHUTDOWN: called in the queue's greenlet; the main greenlet stops."""
        self.request_halt(reason="SHUTDOWN")

    def _retention_loop(self) -> None:
        # Cheap (a stat of the oldest partition): once a second is plenty.
        assert isinstance(self.log, FileLog)  # a replica follows its writer's retention
        while not self._stopping.is_set():
            try:
                self.log.retain(self.config.retain_bytes, self.config.retain_age)
            except OSError as exc:
                log.error("retention_failed", error=str(exc))
            self._stopping.wait(1.0)

    def shutdown(self, halt: Halt) -> None:
        self._stopping.set()
        if self.metrics is not None:
            self.metrics.close()
        if self.log is None or self.queue is None:  # stopped, or failed, before the log was open
            for sock in self._socks:
                sock.close()
            self._remove_unix_socket()
            return
        timeout = self.config.shutdown_timeout
        log.info("shutdown_started", head=self.log.head(), reason=halt.reason)
        for listener in self.listeners:
            listener.close()
        self.queue.drain(timeout)
        if self.watcher is not None:
            self.watcher.stop()
        gevent.sleep(0)  # let streams send their ERR SHUTDOWN line
        for listener in self.listeners:
            listener.stop(timeout)
        self.queue.stop()
        self.queue.close_old_readers()
        self.log.close()
        self._remove_unix_socket()
        log.info("shutdown_complete", head=self.log.head())
