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
Only ``--resync`` acts on those: the copy is renamed, whole, to the sibling
directory ``DIR.resync-<UTC time>`` (never deleted) and copied afresh; and
``--quarantine-diverged`` on an epoch divergence (the hello's epoch
histories part, ``logd/log/epochs.py``): the records from the point on are
moved to a quarantine file and the copy is cut there (``FileLog.quarantine_from``).
The copy's meta takes the primary's epoch history at each hello.

Failover (issue 10): ``--primary`` may list several addresses, tried in
order; a refusing primary ends the stream with ``+REFUSED <final> <new>``
once the copy has its final id: fsynced and ACKed, then the follower exits 0
("handed over") when ``new`` is its ``--advertise`` address, releasing the
writer lock so that the read replica there can ACCEPT; follows ``new`` when
another is named (and the primary an ``ERR_CLIENT REFUSED (primary=X)``
names); else retries, its status saying "primary refusing, no successor named".

The primary's retention is applied: partitions it no longer retains (its
hello's first partition, then ``+FIRST``) are deleted from the copy too,
never the active one. The catch-up shows progress (progress.py).

systemd: READY=1 once the first handshake succeeded, or at once when the copy
already holds records (a read replica serves them while the primary is away);
``STATUS=`` names the primary, the link state and the lag; ``WATCHDOG=1`` is
withheld while an fsync has run for ``STALL_TIMEOUT`` (docs/server.rst).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import Counter
from typing import Any

import gevent
import structlog
from gevent import socket as gsocket

from logd import backoff, faults, speedups
from logd.client.connection import parse_address, same_address
from logd.config import FsyncMode
from logd.errors import ConnectionLost, Diverged, LogdError, Refused, StorageError
from logd.log.epochs import diverged_message, divergence, parse_point
from logd.log import status as status_file
from logd.log.file import FileLog
from logd.metrics import MetricsServer
from logd.process import EXIT_FAILURE, Halt, InFlight, Process
from logd.protocol import NEED_DATA, encode_command
from logd.protocol import replication as rp
from logd.syncthread import SyncThread

from . import progress
from .config import FollowerConfig
from .metrics import COPIED_BYTES, COPIED_IDS, RECONNECTS, FollowerCollector
from .replicator import BadStream, Replicator, exit_for

__all__ = ["Follower"]

log = structlog.get_logger("follower")

# Up to 1 MiB per receive, into one buffer kept for the link: each receive
# ends in an ack (and under --fsync always an fsync), so big ones matter;
# sock.recv(1 MiB) would mmap, fault in and unmap a new buffer every call
# (~8-10 us, whatever arrived: glibc's mmap threshold is 128 KiB).
RECV_SIZE = 1 << 20
STALL_TIMEOUT = 30.0  # seconds an fsync may run before the watchdog's pings stop


class Follower(Process):
    READY_AT_STARTUP = False  # READY=1 after the first handshake (or with a copy to serve)

    def __init__(self, config: FollowerConfig) -> None:
        super().__init__()
        self._fsyncs = InFlight(faults.fsync_func())
        self._syncer = SyncThread("follower-fsync")  # the fsyncs run there
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
        self.primary = config.primary[0] if config.primary else ""  # the one followed now
        self._successor = ""  # a primary named by a refusing one: tried first
        self.remark = ""  # shown in the status: "primary refusing, no successor named", a divergence
        self.counters: Counter[str] = Counter()  # COPIED_BYTES, COPIED_IDS, RECONNECTS (metrics.py)
        self.metrics: MetricsServer | None = None
        self._session_start = (0, 0)  # the copied counters when this session began: the progress
        self._began = time.monotonic()  # this session's start
        self._tty = sys.stderr.isatty()

    # -- the process base's part ------------------------------------------------------

    def startup(self) -> None:
        config = self.config
        structlog.contextvars.bind_contextvars(leader=self.primary)
        if not config.primary or not config.data_dir:
            raise Halt(EXIT_FAILURE, "--primary and --data-dir are required")
        try:
            for address in config.primary + ((config.advertise,) if config.advertise else ()):
                parse_address(address)
        except LogdError as exc:
            raise Halt(EXIT_FAILURE, str(exc)) from None
        try:
            if config.metrics is not None:
                self.metrics = MetricsServer(config.metrics, prefix="logd_follower")
            flog = self._open()
        except (StorageError, OSError) as exc:
            log.error("startup_failed", error=str(exc))
            raise Halt(EXIT_FAILURE, str(exc)) from None
        active = flog.partitions()[-1]
        if self.metrics is not None:
            self.metrics.serve(FollowerCollector(self.metrics_snapshot))
        if flog.head():
            self.set_ready()
        self.greenlets.append(gevent.spawn(self._link_loop))
        self.greenlets.append(gevent.spawn(self._progress_loop))
        self.greenlets.append(gevent.spawn(self._status_loop))
        if config.fsync.mode is FsyncMode.INTERVAL:
            self.greenlets.append(gevent.spawn(self._sync_loop, config.fsync.interval_ms / 1000))
        log.info("follower_started", data_dir=flog.directory, head=flog.head(),
                 partition=active.number, offset=active.size, fsync=str(config.fsync),
                 speedups=speedups.IMPLEMENTATION)

    def _open(self, lock: Any = None) -> FileLog:
        config = self.config
        flog = self.log = FileLog(config.data_dir, index_interval=config.index_interval,
                                  fsync=config.fsync.mode is not FsyncMode.NEVER,
                                  fsync_func=self._fsyncs, program="logd-follower", lock=lock,
                                  on_fsync=self.metrics.fsync_seconds.observe if self.metrics else None)
        active = flog.partitions()[-1]
        self.synced = (active.number, active.size, flog.head())  # recovery fsynced it
        return flog

    def _resync(self, why: LogdError) -> None:
        """--resync: rename the whole copy aside (never deleted) and start an empty one."""
        flog = self.log
        assert flog is not None
        directory = flog.directory.rstrip("/")
        flog.close()
        self.log = None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside, n = f"{directory}.resync-{stamp}", 1
        while os.path.exists(aside):
            n += 1
            aside = f"{directory}.resync-{stamp}-{n}"
        os.rename(directory, aside)
        self._open()
        self._caught_up = False
        log.warning("copy_moved_aside", code=why.code, reason=str(why), moved_to=aside,
                    data_dir=directory)

    def _quarantine(self, epoch: int, point: int) -> None:
        """--quarantine-diverged: the copy's records from ``point`` on are not
        the primary's; move them to a quarantine file, cut the copy there
        (under the same writer lock) and follow from the cut."""
        flog = self.log
        assert flog is not None
        path, moved, lock = flog.quarantine_from(point, epoch)
        self.log = None
        self._open(lock=lock)
        self._caught_up = False
        self.remark = ""
        log.warning("diverged_quarantined", epoch=epoch, first_id=point, last_id=point + moved - 1,
                    records=moved, file=path, head=self._position()[2])

    def _retain(self, first_partition: int) -> None:
        """Delete what the primary no longer retains (never the active partition)."""
        assert self.log is not None
        deleted = self.log.retain(before=first_partition)
        if deleted:
            log.info("retention_applied", deleted=deleted, first_partition=first_partition)

    def _progress_loop(self) -> None:
        """The catch-up's progress: one redrawn line on a terminal, else log lines."""
        every = 0.5 if self._tty else self.config.progress_interval
        while True:
            gevent.sleep(every)
            if self.state == "catching up":
                self._progress()

    def _progress(self, final: bool = False) -> None:
        """One progress report; ``final``: the catch-up just ended (its totals)."""
        copied_bytes = self.counters[COPIED_BYTES] - self._session_start[0]
        copied_ids = self.counters[COPIED_IDS] - self._session_start[1]
        f = progress.fields(copied_bytes, copied_ids, time.monotonic() - self._began,
                            self._position()[2], self.primary_head)
        if self._tty:
            sys.stderr.write("\r" + progress.line(f) + ("\x1b[K\n" if final else "\x1b[K"))
            sys.stderr.flush()
        else:
            log.info("catchup_progress", done=final, **f)

    def status(self) -> str:
        copied = self._position()[2]
        lag = f"lag {max(0, self.primary_head - copied)} ids" if self._connected else "lag unknown"
        state = f"{self.state}, {self.remark}" if self.remark else self.state
        return (f"{state} (primary {self.primary}): copy at id {copied}, "
                f"primary head {self.primary_head}, {lag}")

    def stuck(self) -> str | None:
        running = self._fsyncs.oldest()
        return f"an fsync has been running for {running:.1f}s" if running > STALL_TIMEOUT else None

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
            if self.state == "catching up" and state == "streaming":
                self._progress(final=True)
                if not self._caught_up:
                    self._caught_up = True
                    log.info("follower_caught_up", head=self.primary_head)
            self.state = state
            log.info("link_state", state=state, **why)
            self._save_status(state)

    def _save_status(self, state: str, reason: str = "") -> None:
        """``follower.status`` for a read replica on this directory (log/status.py)."""
        if self.log is None:
            return
        link = state.replace(" ", "_")
        try:
            status_file.save(self.log.directory, status_file.FollowerStatus(
                primary=self.primary, link=link if link in status_file.LINKS else "unknown",
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
                refused = self._session()
                if refused is None:
                    failures = 0
                    continue
                if self._refused(refused):
                    return
                if refused.new_primary:
                    continue  # the named successor, at once
            except LogdError as exc:
                code = exit_for(exc)
                point = parse_point(exc.message) if isinstance(exc, Diverged) else None
                if point is not None and self.config.quarantine_diverged:
                    try:
                        self._quarantine(*point)
                    except (OSError, LogdError, ValueError) as qexc:
                        log.error("quarantine_failed", epoch=point[0], id=point[1], error=str(qexc))
                        self.request_halt(EXIT_FAILURE, f"--quarantine-diverged failed: {qexc}")
                        return
                    continue
                if point is not None:
                    self.remark = f"diverged at epoch {point[0]} id {point[1]}"
                    log.error("diverged", epoch=point[0], id=point[1], head=self._position()[2],
                              hint="--quarantine-diverged moves the records from there aside and follows")
                if code is not None and self.config.resync and self._position()[2]:
                    self._resync(exc)
                    continue
                if code is not None:
                    log.error("replication_refused", code=exc.code, reason=str(exc), exit_status=code,
                              data="kept, untouched")
                    self._set_state("stopped", why=exc.code)
                    self.request_halt(code, str(exc))
                    return
                if isinstance(exc, Refused) and exc.primary and not self._is_me(exc.primary):
                    log.warning("primary_refused", reason=str(exc), new_primary=exc.primary)
                    self._successor = exc.primary
                else:
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
            if self._connected and not self.remark:
                failures = 0
            self._next_primary()
            wait = 0.0 if self._successor == self.primary else backoff.delay(
                failures, base=0.1, cap=self.config.max_backoff)
            failures += 1
            log.info("reconnecting", primary=self.primary, in_seconds=round(wait, 3), failures=failures)
            gevent.sleep(wait)

    def _is_me(self, address: str) -> bool:
        return bool(self.config.advertise) and same_address(address, self.config.advertise)

    def _next_primary(self) -> None:
        """The address to try next: a named successor first, then the --primary
        list in order (after the one that just failed)."""
        if self._successor and self._successor != self.primary:
            self.primary, self.remark = self._successor, ""
        else:
            self._successor = ""
            addresses = self.config.primary
            i = addresses.index(self.primary) + 1 if self.primary in addresses else 0
            self.primary = addresses[i % len(addresses)]
        structlog.contextvars.bind_contextvars(leader=self.primary)

    def _refused(self, refused: rp.RefusedFrame) -> bool:
        """The primary refuses writes and sent everything up to its final id
        (written, fsynced and ACKed by ``_session``). True: this process stops
        (handed over); else the link loop tries the successor or retries."""
        new = refused.new_primary
        if new and self._is_me(new):
            reason = (f"handed over: primary {self.primary} refused and named this copy's server "
                      f"as the new primary")
            log.warning("handed_over", primary=self.primary, new_primary=new, final_id=refused.final)
            self._set_state("handed over", final_id=refused.final)
            self.request_halt(0, reason)
            return True
        if new:
            log.warning("primary_refused", primary=self.primary, new_primary=new, final_id=refused.final)
            self._successor = new
            self._next_primary()
        else:
            log.warning("primary_refused", primary=self.primary, new_primary=None, final_id=refused.final)
            self.remark = "primary refusing, no successor named"
            self._set_state("stopped", why=self.remark, final_id=refused.final)
        return False

    def _session(self) -> rp.RefusedFrame | None:
        """One connection: handshake, then frames until it breaks; returns the
        ``+REFUSED`` frame that ended it (everything up to its final id is
        written, fsynced and ACKed), or None at ``+EOF``.

        Raises:
            LogdError: the primary refused or ended the stream (error line), or
                sent what is no replication stream (ProtocolError).
            BadStream: a record or frame that cannot be written.
            OSError: the connection failed or timed out.
        """
        flog, config = self.log, self.config
        assert flog is not None
        self._connected = False
        self._session_start = (self.counters[COPIED_BYTES], self.counters[COPIED_IDS])
        self._began = time.monotonic()
        family, addr = parse_address(self.primary)
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
        rep = Replicator(partition, offset, head, last_crc, flog.index_interval, flog.index_due())
        history = flog.meta.history if head else None  # an empty copy adopts the primary's
        ours = flog.meta.epochs
        hello = rp.FollowerHello(history, head, last_crc, config.name, ours if head else (),
                                 fsync=str(config.fsync), advertise=config.advertise)
        # An empty copy asks for the first retained partition, wherever that is.
        start = partition if head or offset else 0
        sock.sendall(encode_command("REPLICATE", start, 0, offset, rp.encode_follower_hello(hello)))
        parser = rp.FrameParser()
        always = config.fsync.mode is FsyncMode.ALWAYS
        chunk = memoryview(bytearray(RECV_SIZE))
        while True:
            n = sock.recv_into(chunk)
            if not n:
                raise ConnectionLost("the primary closed the connection")
            parser.receive_data(chunk[:n])  # copied into the parser's buffer
            wrote = False
            while True:
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, rp.Data):
                    write = rep.on_data(event)
                    if write is not None:
                        flog.append_records(write.first_id, write.data, write.count, write.points)
                        self.counters[COPIED_BYTES] += len(write.data)
                        self.counters[COPIED_IDS] += write.count
                        wrote = True
                elif isinstance(event, rp.Next):
                    roll = rep.on_next(event)
                    flog.roll_to(roll.partition, roll.first_id)
                elif isinstance(event, rp.First):
                    self._retain(event.partition)
                elif isinstance(event, rp.HeadFrame):
                    self.primary_head = max(self.primary_head, event.id)
                    if event.id <= rep.last_id:
                        self._set_state("streaming", head=event.id)
                elif isinstance(event, rp.PrimaryHello):
                    begin = rep.on_hello(event)
                    point = divergence(ours, event.epochs, head) if head else None
                    if point is not None:  # an older primary would not have said so
                        raise Diverged(diverged_message(ours, event.epochs, point, head),
                                       partition, offset, point)
                    if history is None and event.history:
                        flog.adopt_history(event.history)
                    flog.adopt_epochs(event.epochs)
                    if begin is not None:
                        flog.roll_to(begin.partition, begin.first_id)
                    self._retain(event.first_partition)
                    self._rep, self._connected = rep, True
                    self.primary_head = event.head
                    self.set_ready()
                    self._set_state("catching up" if event.head > head else "streaming",
                                    primary_head=event.head, partition=event.partition,
                                    offset=event.offset)
                    # What the copy holds already: --min-acks on the primary counts it.
                    sock.sendall(rp.encode_ack(rep.position, self.synced))
                elif isinstance(event, rp.End):
                    return None
                elif isinstance(event, rp.RefusedFrame):
                    if event.final != rep.last_id:
                        raise BadStream(f"REFUSED at final id {event.final}, but the copy is at "
                                        f"{rep.last_id}", *rep.position[:2])
                    self._sync()  # whatever --fsync says: the copy may become the primary
                    sock.sendall(rp.encode_ack(rep.position, self.synced))
                    return event
            if wrote:
                self.remark = ""  # it takes writes again (or another one does)
            if wrote and self.state == "catching up" and rep.last_id >= self.primary_head:
                self._set_state("streaming", head=self.primary_head)
            if wrote:
                if always:
                    self._sync()
                sock.sendall(rp.encode_ack(rep.position, self.synced))

    def _sync(self) -> None:
        flog = self.log
        assert flog is not None
        point = flog.begin_sync()
        try:
            self._syncer.run(point.run)
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

