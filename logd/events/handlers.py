"""Application logic: one method per command, each returning a Reply.

``Handlers`` is plain code, callable without the queue or gevent, for tests;
the queue (``queue.py``) runs it for every command in order. The reply
types here are what the connection adapter (``server.py``) sends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import msgpack
import structlog

from .. import protocol as p
from .. import stats as st
from ..config import FsyncMode, FsyncPolicy
from ..admin import AdminPolicy
from ..errors import (Diverged, Forbidden, InvalidArgument, NotRetained, OutOfRange, Refused,
                      ShuttingDown, StorageError, UnknownCommand)
from ..log import Log
from ..protocol import replication as rp

__all__ = ["Handlers", "Stream", "Replication", "FollowerState", "WaitCommit", "CloseAfter", "Peer",
           "Reply", "FULL_COPIES", "PARTIAL_RESUMES"]

FULL_COPIES = "replication_full_copies"  # REPLICATE from a follower with nothing yet
PARTIAL_RESUMES = "replication_partial_resumes"  # ... from a follower resuming its copy

log = structlog.get_logger("logd.events")


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a command: enough to decide admin rights."""

    addr: str
    local: bool  # the admin policy trusts its address, or it came over the unix socket


@dataclass(frozen=True, slots=True)
class Stream:
    """Reply to READ: the connection streams records ``start ..`` itself."""

    start: int
    limit: int


@dataclass(frozen=True, slots=True)
class Replication:
    """Reply to REPLICATE: the connection sends ``hello`` (the OK reply), then
    frames from ``partition:offset`` (record ``next_id``) to partition ``end``."""

    partition: int
    offset: int
    next_id: int
    end: int
    hello: bytes
    follower: rp.FollowerHello | None


@dataclass(slots=True)
class FollowerState:
    """One connected follower, for STATS; the connection updates it on each ACK."""

    addr: str
    name: str
    since: float = field(default_factory=time.time)
    written: tuple[int, int, int] = (0, 0, 0)  # partition, offset, id
    synced: tuple[int, int, int] = (0, 0, 0)
    last_report: float = 0.0
    # (bytes, seconds) behind, from the written position (server.py: events/lag.py)
    lag: Callable[[tuple[int, int, int]], tuple[int, float]] | None = None

    def describe(self, head: int, now: float) -> str:
        ago = f"{now - self.last_report:.1f}s" if self.last_report else "never"
        lag_bytes, lag_seconds = self.lag(self.written) if self.lag is not None else (0, 0.0)
        return (f"addr={self.addr} name={self.name or '-'} written={'%d:%d:%d' % self.written} "
                f"synced={'%d:%d:%d' % self.synced} lag_ids={max(0, head - self.written[2])} "
                f"lag_bytes={lag_bytes} lag_seconds={lag_seconds:.3f} "
                f"connected_since={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.since))} "
                f"last_report={ago}")


@dataclass(frozen=True, slots=True)
class WaitCommit:
    """Send ``reply`` once ``id`` is committed."""

    id: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class CloseAfter:
    """Send ``reply``, then close the connection."""

    reply: bytes


Reply = Union[bytes, Stream, Replication, WaitCommit, CloseAfter]


class Handlers:
    """Application logic: one method per command, each returning a Reply."""

    def __init__(
        self,
        log_: Log,
        fsync: FsyncPolicy,
        stats: st.Stats,
        on_shutdown: Callable[[], None] = lambda: None,
        extra_stats: Callable[[], dict[str, Any]] = dict,
        admin: AdminPolicy = AdminPolicy(),
    ) -> None:
        self.log = log_
        self.admin = admin
        self.fsync = fsync
        self.stats = stats
        self.on_shutdown = on_shutdown
        self.extra_stats = extra_stats
        self.stopping = False
        # A read replica (--refuse, daemon.py) sets this: every MSG gets the
        # Refused it returns, which names the primary when known.
        self.refusing: Callable[[], Refused] | None = None
        self.followers: dict[int, FollowerState] = {}  # by connection id, kept by server.py
        self._table: dict[type, Callable[[Any, Peer], Reply]] = {
            p.Msg: self.msg,
            p.Read: self.read,
            p.Head: self.head,
            p.Ping: self.ping,
            p.Close: self.close,
            p.Shutdown: self.shutdown,
            p.Stats: self.stats_,
            p.Replicate: self.replicate,
            p.Refuse: self.not_yet,
            p.Accept: self.not_yet,
        }

    def handle(self, command: p.Command, peer: Peer) -> Reply:
        """Run one command. Raises LogdError subclasses for error replies."""
        return self._table[type(command)](command, peer)

    def msg(self, cmd: p.Msg, peer: Peer) -> Reply:
        if self.refusing is not None:
            raise self.refusing()
        if self.stopping:
            raise ShuttingDown("server is shutting down; not accepting writes")
        try:
            last = self.log.append(cmd.bodies)
        except StorageError:
            self.stats.incr(st.WRITE_ERRORS)
            raise
        self.stats.incr(st.MESSAGES_WRITTEN, len(cmd.bodies))
        self.stats.incr(st.BYTES_WRITTEN, sum(map(len, cmd.bodies)))
        reply = p.encode_ok_id(last)
        if self.fsync.mode is FsyncMode.ALWAYS:
            return WaitCommit(last, reply)
        return reply

    def read(self, cmd: p.Read, peer: Peer) -> Reply:
        first, head = self.log.first_id(), self.log.head()
        start = cmd.start or first
        if start < first:
            raise NotRetained(
                f"start {start} is no longer retained; valid starts are {first}..{head + 1}",
                first=first,
                head=head,
            )
        if start > head + 1:
            raise OutOfRange(
                f"start {start} is past the head; valid starts are {first}..{head + 1}",
                first=first,
                head=head,
            )
        return Stream(start, cmd.limit)

    def head(self, cmd: p.Head, peer: Peer) -> Reply:
        head = self.log.head()
        reply = p.encode_ok_id(head)
        # Under `always`, a HEAD answered before the MSGs it counts are durable
        # would name ids a crash can still take back.
        if self.fsync.mode is FsyncMode.ALWAYS and head > self.log.synced_head():
            return WaitCommit(head, reply)
        return reply

    def ping(self, cmd: p.Ping, peer: Peer) -> Reply:
        return p.PONG

    def close(self, cmd: p.Close, peer: Peer) -> Reply:
        return CloseAfter(p.OK)

    def shutdown(self, cmd: p.Shutdown, peer: Peer) -> Reply:
        if not self.admin.allows(peer):
            log.warning("admin_refused", command="SHUTDOWN", peer=peer.addr)
            raise Forbidden(f"SHUTDOWN is accepted only from {self.admin.who}")
        self.on_shutdown()
        return p.OK

    def stats_(self, cmd: p.Stats, peer: Peer) -> Reply:
        data = self.collect_stats()
        if cmd.format == "msgpack":
            return p.encode_body(msgpack.packb(data))
        text = "".join(f"{k}: {v}\r\n" for k, v in data.items())
        return p.encode_body(text.encode())

    def collect_stats(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "head": self.log.head(),
            "first_id": self.log.first_id(),
            "synced_head": self.log.synced_head(),
            "fsync_policy": str(self.fsync),
        }
        data.update(self.log.stats())
        data.update(self.stats.snapshot())
        data.update(self.extra_stats())
        data[FULL_COPIES] = self.stats.counters[FULL_COPIES]
        data[PARTIAL_RESUMES] = self.stats.counters[PARTIAL_RESUMES]
        data["followers"] = len(self.followers)
        now, head = time.time(), data["head"]
        for conn_id, f in sorted(self.followers.items()):
            data[f"follower_{conn_id}"] = f.describe(head, now)
        return data

    # -- replication ------------------------------------------------------------------

    def replicate(self, cmd: p.Replicate, peer: Peer) -> Reply:
        follower = None
        if cmd.hello:
            try:
                follower = rp.decode_follower_hello(cmd.hello)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        hello = self.plan_replication(cmd.start, cmd.offset, follower)
        if cmd.end and cmd.end < hello.partition:
            raise InvalidArgument(f"end partition {cmd.end} is before start partition {hello.partition}")
        if follower is not None:
            self.stats.incr(PARTIAL_RESUMES if follower.last_id else FULL_COPIES)
        log.info("replication_started", peer=peer.addr, name=follower.name if follower else "",
                 partition=hello.partition, offset=hello.offset, next_id=hello.next_id,
                 anonymous=follower is None)
        return Replication(hello.partition, hello.offset, hello.next_id, cmd.end,
                           rp.encode_hello_reply(hello), follower)

    def plan_replication(self, start: int, offset: int, follower: rp.FollowerHello | None
                         ) -> rp.PrimaryHello:
        """Where a REPLICATE stream starts, or why it cannot: the handshake.

        A follower's copy must be a prefix of this log: same history, its
        last record the one before ``start:offset`` here, with the same CRC.
        An empty copy (no last record) may start at any retained partition.

        Raises:
            Diverged: it is not (the reason says where the copies part).
            NotRetained: partition ``start`` was deleted by retention.
            OutOfRange: (an anonymous reader) no such position yet.
            InvalidArgument: (an anonymous reader) no record starts at ``offset``.
        """
        log_ = self.log
        partitions = getattr(log_, "partitions", None)
        if partitions is None:
            raise UnknownCommand("REPLICATE needs a log in a data directory")
        parts = partitions()
        meta = getattr(log_, "meta", None)
        history = meta.history if meta is not None else None
        first, head = log_.first_id(), log_.head()
        first_part, last = parts[0], parts[-1]
        start = start or first_part.number
        at = dict(partition=start, offset=offset, id=follower.last_id if follower else 0)
        if follower is not None and None not in (follower.history, history) \
                and follower.history != history:
            raise Diverged(f"history differs: the follower's is {follower.history}, "
                           f"the primary's {history}", **at)
        if start < first_part.number:
            raise NotRetained(f"partition {start} is no longer retained; the first retained "
                              f"is partition {first_part.number}", first=first, head=head)
        found = [x for x in parts if x.number == start]
        if not found or offset > found[0].size:
            end = f"the primary's log ends at partition {last.number} offset {last.size}"
            if follower is not None:
                raise Diverged(f"the follower is ahead of the primary: {end}", **at)
            raise OutOfRange(f"no position {start}:{offset}: {end}", first=first, head=head)
        cursor: Any = log_.cursor(first)  # a file cursor: the log has partitions
        try:
            try:
                cursor.seek_position(start, offset)
            except InvalidArgument:
                if follower is None:
                    raise
                raise Diverged(f"no record of the primary starts at {start}:{offset}", **at) from None
            next_id = cursor.next_id
            before = cursor.header_before() if follower is not None and follower.last_id else None
        finally:
            cursor.close()
        if follower is not None and not follower.last_id:
            if offset:  # an empty copy begins a partition file, wherever the log starts
                raise Diverged(f"an empty copy cannot start at {start}:{offset}", **at)
        elif follower is not None:
            if next_id - 1 != follower.last_id:
                raise Diverged(f"the follower's last record is {follower.last_id}, the primary's "
                               f"record before {start}:{offset} is {next_id - 1}", **at)
            if before is not None and before.crc != follower.last_crc:
                raise Diverged(f"record {follower.last_id} differs (crc {follower.last_crc:08x} on "
                               f"the follower, {before.crc:08x} on the primary)", **at)
        return rp.PrimaryHello(history, head, first_part.number, first, start, offset, next_id,
                               found[0].first_id)

    def not_yet(self, cmd: p.Command, peer: Peer) -> Reply:
        raise UnknownCommand(f"{type(cmd).__name__.upper()} is not implemented in this version")
