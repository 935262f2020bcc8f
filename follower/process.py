"""The follower process: the link to the primary and the copy it writes.

On the process base (``logd/process.py``: signals, ``Halt`` exit codes,
notify). ``startup`` opens the copy as its one writer (``FileLog``: the
writer lock, named ``logd-follower``, and the same recovery as the server,
which cuts a torn tail of its own first). The link greenlet then loops:
connect, ``REPLICATE <its active partition> 0 <its size> <hello>``, verify
and write what comes (``replicator.py`` decides; ``FileLog.append_records``
and ``roll_to`` write), fsync per ``--fsync``, report with ``ACK``. A lost
link, a bad frame or a bad record is logged and retried from the copy's own
tail, after capped jittered backoff (``logd/backoff.py``). A refusal it
cannot fix by retrying stops the process: NOTRETAINED (exit 10) or DIVERGED
(exit 11); it never truncates or replaces its copy because the primary says so.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from typing import Any

import gevent
import structlog
from gevent import socket as gsocket

from logd import backoff, speedups
from logd.client.connection import parse_address
from logd.config import FsyncMode
from logd.errors import ConnectionLost, LogdError, StorageError
from logd.log import status as status_file
from logd.log.file import FileLog
from logd.metrics import MetricsServer
from logd.process import EXIT_FAILURE, Halt, Process
from logd.protocol import NEED_DATA, encode_command
from logd.protocol import replication as rp

from .config import FollowerConfig
from .metrics import COPIED_BYTES, COPIED_IDS, RECONNECTS, FollowerCollector
from .replicator import BadStream, Replicator, exit_for

__all__ = ["Follower"]

log = structlog.get_logger("follower")


class Follower(Process):
    def __init__(self, config: FollowerConfig) -> None:
        super().__init__()
        self.config = config
        self.log: FileLog | None = None
        self.greenlets: list[Any] = []
        self.state = "connecting"
        self.synced = (0, 0, 0)
        self.primary_head = 0
        self._sock: Any = None
        self._rep: Replicator | None = None
        self._caught_up = False
        self._connected = False  # the current session got the primary's hello
        self.counters: Counter[str] = Counter()  # COPIED_BYTES, COPIED_IDS, RECONNECTS (metrics.py)
        self.metrics: MetricsServer | None = None

    # -- the process base's part ------------------------------------------------------

    def startup(self) -> None:
        config = self.config
        structlog.contextvars.bind_contextvars(leader=config.primary)
        if not config.primary or not config.data_dir:
            raise Halt(EXIT_FAILURE, "--primary and --data-dir are required")
        try:
            parse_address(config.primary)
        except LogdError as exc:
            raise Halt(EXIT_FAILURE, str(exc)) from None
        try:
            if config.metrics is not None:
                self.metrics = MetricsServer(config.metrics, prefix="logd_follower")
            flog = self.log = FileLog(config.data_dir, index_interval=config.index_interval,
                                      fsync=config.fsync.mode is not FsyncMode.NEVER,
                                      program="logd-follower",
                                      on_fsync=self.metrics.fsync_seconds.observe if self.metrics else None)
        except (StorageError, OSError) as exc:
            log.error("startup_failed", error=str(exc))
            raise Halt(EXIT_FAILURE, str(exc)) from None
        active = flog.partitions()[-1]
        self.synced = (active.number, active.size, flog.head())  # recovery fsynced it
        if self.metrics is not None:
            self.metrics.serve(FollowerCollector(self.metrics_snapshot))
        self.greenlets.append(gevent.spawn(self._link_loop))
        self.greenlets.append(gevent.spawn(self._status_loop))
        if config.fsync.mode is FsyncMode.INTERVAL:
            self.greenlets.append(gevent.spawn(self._sync_loop, config.fsync.interval_ms / 1000))
        log.info("follower_started", data_dir=flog.directory, head=flog.head(),
                 partition=active.number, offset=active.size, fsync=str(config.fsync),
                 speedups=speedups.IMPLEMENTATION)

    def status(self) -> str:
        return f"{self.state}: copy at id {self._position()[2]}, primary head {self.primary_head}"

    def metrics_snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "primary_head": self.primary_head, "written": self._position(),
                "fsynced": self.synced, COPIED_BYTES: self.counters[COPIED_BYTES],
                COPIED_IDS: self.counters[COPIED_IDS], RECONNECTS: self.counters[RECONNECTS]}

    def shutdown(self, halt: Halt) -> None:
        gevent.killall(self.greenlets)
        if self.metrics is not None:
            self.metrics.close()
        self._save_status("stopped", halt.reason or "")
        if self._sock is not None:
            self._sock.close()
        if self.log is not None:
            self.log.close()
        log.info("follower_stopped", exit_status=halt.exit_status, reason=halt.reason)

    # -- the link ---------------------------------------------------------------------

    def _position(self) -> tuple[int, int, int]:
        if self._rep is not None:
            return self._rep.position
        assert self.log is not None
        active = self.log.partitions()[-1]
        return active.number, active.size, self.log.head()

    def _set_state(self, state: str, **why: Any) -> None:
        if state != self.state:
            self.state = state
            log.info("link_state", state=state, **why)
            self.notify.status(self.status())
            self._save_status(state)

    def _save_status(self, state: str, reason: str = "") -> None:
        """``follower.status`` for a read replica on this directory (log/status.py)."""
        if self.log is None:
            return
        link = state.replace(" ", "_")
        try:
            status_file.save(self.log.directory, status_file.FollowerStatus(
                primary=self.config.primary, link=link if link in status_file.LINKS else "unknown",
                reason=reason, written=self._position(), fsynced=self.synced,
                primary_head=self.primary_head, updated=time.time(), pid=os.getpid()))
        except OSError as exc:
            log.warning("status_not_written", error=str(exc))

    def _status_loop(self) -> None:
        # Once a second, well inside status.HEARTBEAT: a replica calls an older file stale.
        while True:
            gevent.sleep(1.0)
            self._save_status(self.state)

    def _link_loop(self) -> None:
        failures = 0
        while True:
            self._set_state("connecting")
            try:
                self._session()
                failures = 0
                continue
            except LogdError as exc:
                code = exit_for(exc)
                if code is not None:
                    log.error("replication_refused", code=exc.code, reason=str(exc), exit_status=code,
                              data="kept, untouched")
                    self._set_state("stopped", why=exc.code)
                    self.request_halt(code, str(exc))
                    return
                log.warning("link_lost", error=str(exc))
            except BadStream as exc:
                log.error("bad_stream", reason=exc.reason, partition=exc.partition, offset=exc.offset)
            except (OSError, TimeoutError) as exc:
                log.warning("link_lost", error=str(exc) or type(exc).__name__)
            except Exception as exc:  # a bug: stop rather than spin or hang
                log.exception("follower_failed")
                self.request_halt(EXIT_FAILURE, f"internal error: {exc}")
                return
            finally:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                self._rep = None
            self.counters[RECONNECTS] += 1
            if self._connected:
                failures = 0
            wait = backoff.delay(failures, base=0.1, cap=self.config.max_backoff)
            failures += 1
            log.info("reconnecting", in_seconds=round(wait, 3), failures=failures)
            gevent.sleep(wait)

    def _session(self) -> None:
        """One connection: handshake, then frames until it breaks.

        Raises:
            LogdError: the primary refused or ended the stream (error line), or
                sent what is no replication stream (ProtocolError).
            BadStream: a record or frame that cannot be written.
            OSError: the connection failed or timed out.
        """
        flog, config = self.log, self.config
        assert flog is not None
        self._connected = False
        family, addr = parse_address(config.primary)
        sock = self._sock = gsocket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(config.connect_timeout)
        sock.connect(addr)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(config.link_timeout)
        partition, offset, head = self._position()
        last_crc = 0
        if head:
            with flog.cursor(head + 1) as cursor:
                before = cursor.header_before()
                last_crc = before.crc if before is not None else 0
        rep = Replicator(partition, offset, head, last_crc)
        history = flog.meta.history if head else None  # an empty copy adopts the primary's
        hello = rp.FollowerHello(history, head, last_crc, config.name)
        # An empty copy asks for the first retained partition, wherever that is.
        start = partition if head or offset else 0
        sock.sendall(encode_command("REPLICATE", start, 0, offset, rp.encode_follower_hello(hello)))
        parser = rp.FrameParser()
        always = config.fsync.mode is FsyncMode.ALWAYS
        while True:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionLost("the primary closed the connection")
            parser.receive_data(data)
            wrote = False
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, rp.Data):
                    write = rep.on_data(event)
                    if write is not None:
                        flog.append_records(write.first_id, write.data, write.sizes)
                        self.counters[COPIED_BYTES] += len(write.data)
                        self.counters[COPIED_IDS] += len(write.sizes)
                        wrote = True
                elif isinstance(event, rp.Next):
                    roll = rep.on_next(event)
                    flog.roll_to(roll.partition, roll.first_id)
                elif isinstance(event, rp.HeadFrame):
                    self.primary_head = max(self.primary_head, event.id)
                    if event.id <= rep.last_id:
                        self._set_state("streaming", head=event.id)
                        if not self._caught_up:
                            self._caught_up = True
                            log.info("follower_caught_up", head=event.id)
                elif isinstance(event, rp.PrimaryHello):
                    begin = rep.on_hello(event)
                    if history is None and event.history:
                        flog.adopt_history(event.history)
                    if begin is not None:
                        flog.roll_to(begin.partition, begin.first_id)
                    self._rep, self._connected = rep, True
                    self.primary_head = event.head
                    self._set_state("catching up" if event.head > head else "streaming",
                                    primary_head=event.head, partition=event.partition,
                                    offset=event.offset)
                elif isinstance(event, rp.End):
                    return
            if wrote:
                if always:
                    self._sync()
                sock.sendall(rp.encode_ack(rep.position, self.synced))

    def _sync(self) -> None:
        flog = self.log
        assert flog is not None
        point = flog.begin_sync()
        try:
            gevent.get_hub().threadpool.apply(point.run)
        except OSError as exc:
            error = flog.fail_sync(exc)
            log.error("fsync_failed", error=str(error))
            self.request_halt(EXIT_FAILURE, str(error))
            raise
        flog.end_sync(point)
        self.synced = (*point.position, point.head)

    def _sync_loop(self, every: float) -> None:
        while True:
            gevent.sleep(every)
            if self.log is None or self.synced[2] == self.log.head():
                continue
            self._sync()
            sock, rep = self._sock, self._rep
            if sock is not None and rep is not None:
                try:
                    sock.sendall(rp.encode_ack(rep.position, self.synced))
                except OSError:
                    pass  # the link greenlet sees it too

