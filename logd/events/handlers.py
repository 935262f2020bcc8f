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
from .. import speedups
from ..config import FsyncMode, FsyncPolicy
from ..admin import AdminPolicy
from ..errors import (Diverged, Forbidden, InvalidArgument, NotRetained, OutOfRange, Refused,
                      ShuttingDown, StorageError, UnknownCommand)
from ..log import Log
from ..protocol import replication as rp
from ..log.epochs import diverged_message, divergence
from .role import Role
from .acks import Acks, WaitAcks

__all__ = ["Handlers", "Stream", "Replication", "FollowerState", "WaitCommit", "WaitSync", "CloseAfter",
           "Peer", "Reply", "FULL_COPIES", "PARTIAL_RESUMES", "ADMIN_REFUSED", "AUTH_FAILURES"]

FULL_COPIES = "replication_full_copies"  # REPLICATE from a follower with nothing yet
PARTIAL_RESUMES = "replication_partial_resumes"  # ... from a follower resuming its copy
ADMIN_REFUSED = "admin_refused"  # admin commands from a peer that may not send them
AUTH_FAILURES = "auth_failures"  # AUTH with a wrong token

log = structlog.get_logger("logd.events")


@dataclass(slots=True)
class Peer:
    """Who sent a command: enough to decide admin rights. One per connection:
    a successful AUTH sets ``authenticated`` for the rest of it."""

    addr: str
    local: bool  # the admin policy trusts its address, or it came over the unix socket
    authenticated: bool = False


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
    # (final id, new primary or "") once this server refuses writes: the stream
    # ends there with +REFUSED; None while it takes them (and on a read replica).
    refused: Callable[[], tuple[int, str] | None] | None = None
    # This server's epoch now: the stream ends (+EOF) when an ACCEPT changes
    # it, so followers reconnect and learn the new epoch before its records.
    epoch: Callable[[], int] | None = None


@dataclass(slots=True)
class FollowerState:
    """One connected follower, for STATS; the connection updates it on each ACK."""

    addr: str
    name: str
    since: float = field(default_factory=time.time)
    written: tuple[int, int, int] = (0, 0, 0)  # partition, offset, id
    synced: tuple[int, int, int] = (0, 0, 0)
    last_report: float = 0.0
    fsync: str = ""  # its --fsync policy, from its hello ("": not said)
    counted: bool = False  # a follower (it sent a hello), not an anonymous reader: --min-acks counts it
    advertise: str = ""  # its hello's: the read replica serving its copy ("": not said)
    # (bytes, seconds) behind, from the written position (server.py: events/lag.py)
    lag: Callable[[tuple[int, int, int]], tuple[int, float]] | None = None

    def describe(self, head: int, now: float) -> str:
        ago = f"{now - self.last_report:.1f}s" if self.last_report else "never"
        lag_bytes, lag_seconds = self.lag(self.written) if self.lag is not None else (0, 0.0)
        return (f"addr={self.addr} name={self.name or '-'} written={'%d:%d:%d' % self.written} "
                f"synced={'%d:%d:%d' % self.synced} lag_ids={max(0, head - self.written[2])} "
                f"lag_bytes={lag_bytes} lag_seconds={lag_seconds:.3f} "
                f"connected_since={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.since))} "
                f"last_report={ago} advertise={self.advertise or '-'}")


@dataclass(frozen=True, slots=True)
class WaitCommit:
    """Send ``reply`` once ``id`` is committed."""

    id: int
    reply: bytes | WaitAcks


@dataclass(frozen=True, slots=True)
class WaitSync:
    """Send ``reply`` once everything written so far is fsynced (REFUSE)."""

    reply: bytes


@dataclass(frozen=True, slots=True)
class CloseAfter:
    """Send ``reply``, then close the connection."""

    reply: bytes


Reply = Union[bytes, Stream, Replication, WaitCommit, WaitSync, WaitAcks, CloseAfter]


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
        # Primary, refusing or read replica (role.py); the daemon sets a replica's.
        self.role = Role(log_)
        # ACCEPT on a read replica: the daemon swaps the log (None: not possible here).
        self.promote: Callable[[], None] | None = None
        self.followers: dict[int, FollowerState] = {}  # by connection id, kept by server.py
        self.acks: Acks | None = None  # --min-acks > 0 (queue.py)
        self._table: dict[type, Callable[[Any, Peer], Reply]] = {
            p.Msg: self.msg,
            p.Read: self.read,
            p.Head: self.head,
            p.Ping: self.ping,
            p.Close: self.close,
            p.Shutdown: self.shutdown,
            p.Stats: self.stats_,
            p.Replicate: self.replicate,
            p.Refuse: self.refuse,
            p.Accept: self.accept,
            p.Auth: self.auth,
        }

    @property
    def refusing(self) -> Callable[[], Refused] | None:
        return self.role.refusal if self.role.refusing else None

    @refusing.setter
    def refusing(self, refusal: Callable[[], Refused]) -> None:
        """A read replica: every MSG gets the Refused ``refusal`` returns."""
        self.role = Role(self.log, replica=True, replica_refusal=refusal)

    def handle(self, command: p.Command, peer: Peer) -> Reply:
        """Run one command. Raises LogdError subclasses for error replies."""
        return self._table[type(command)](command, peer)

    def msg(self, cmd: p.Msg, peer: Peer) -> Reply:
        if self.role.refusing:
            raise self.role.refusal()
        if self.stopping:
            raise ShuttingDown("server is shutting down; not accepting writes")
        try:
            last = self.log.append(cmd.bodies)
        except StorageError:
            self.stats.incr(st.WRITE_ERRORS)
            raise
        self.stats.wrote(cmd.bodies)
        ok = p.encode_ok_id(last)
        reply: bytes | WaitAcks = ok
        if self.acks is not None:
            reply = self.acks.expect(last - len(cmd.bodies) + 1, last, ok)
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
        if self.acks is not None:  # the last id readers can see (never beyond the commit)
            return p.encode_ok_id(self.acks.visible.committed)
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
        self._admin_only("SHUTDOWN", peer)
        self.on_shutdown()
        return p.OK

    # -- admin: who may, and the role switch (role.py) -----------------------------------

    def _admin_only(self, name: str, peer: Peer) -> None:
        if not self.admin.allows(peer):
            self.stats.incr(ADMIN_REFUSED)
            log.warning("admin_refused", command=name, peer=peer.addr)
            raise Forbidden(f"{name} is accepted only from {self.admin.who}")

    def auth(self, cmd: p.Auth, peer: Peer) -> Reply:
        if self.admin.token is None:
            raise InvalidArgument("AUTH: no admin token is configured on this server")
        if not self.admin.check_token(cmd.token):
            self.stats.incr(AUTH_FAILURES)
            log.warning("auth_failed", peer=peer.addr)
            raise Forbidden("AUTH: wrong admin token")
        peer.authenticated = True
        return p.OK

    def refuse(self, cmd: p.Refuse, peer: Peer) -> Reply:
        """Stop taking writes; ``OK <final id>`` once all of it is fsynced.

        Everything before REFUSE in the queue has been appended (the queue is
        in order), so the head now is the final id. The role is persisted
        here, before the reply; the reply waits for the fsync (``WaitSync``).
        """
        self._admin_only("REFUSE", peer)
        if cmd.partition:
            raise InvalidArgument(
                "REFUSE <partition> other than 0 is not supported: the reply must carry the "
                "final id, which a deferred refusal cannot know; send REFUSE when it should apply")
        self.role.refuse(cmd.new_primary, f"REFUSE from {peer.addr}")
        final = self.log.head()
        log.info("refuse", peer=peer.addr, final_id=final, new_primary=cmd.new_primary)
        if self.role.replica:
            return p.encode_ok_id(final)  # a read replica writes nothing: nothing to fsync
        return WaitSync(p.encode_ok_id(final))

    def accept(self, cmd: p.Accept, peer: Peer) -> Reply:
        """Take writes: ``OK epoch=<n> first=<id>``, or ``OK already primary epoch=<n> first=<id>``."""
        self._admin_only("ACCEPT", peer)
        if cmd.partition:
            raise InvalidArgument(
                "ACCEPT <partition> other than 0 is not supported: an epoch begins at the next id, "
                "in the active partition")
        if self.role.replica:
            if self.promote is None:
                raise InvalidArgument("ACCEPT: this read replica cannot be promoted here")
            self.promote()  # raises (DirectoryLocked naming the holder) with nothing changed
        epoch, first, changed = self.role.accept()
        log.info("accept", peer=peer.addr, epoch=epoch, first_id=first, changed=changed)
        prefix = b"OK " if changed else b"OK already primary "
        return prefix + b"epoch=%d first=%d\r\n" % (epoch, first)

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
        data.update(self.role.whoami().stats())
        data["higher_epoch_seen"] = self.role.higher_epoch_seen
        data[ADMIN_REFUSED] = self.stats.counters[ADMIN_REFUSED]
        data[AUTH_FAILURES] = self.stats.counters[AUTH_FAILURES]
        data[FULL_COPIES] = self.stats.counters[FULL_COPIES]
        data[PARTIAL_RESUMES] = self.stats.counters[PARTIAL_RESUMES]
        data["followers"] = len(self.followers)
        data["native"] = int(speedups.native is not None)  # 1: logd._speedups runs the per-message work
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
        if follower is not None:
            self._check_epochs(follower.epochs, peer)
        hello = self.plan_replication(cmd.start, cmd.offset, follower)
        if cmd.end and cmd.end < hello.partition:
            raise InvalidArgument(f"end partition {cmd.end} is before start partition {hello.partition}")
        if follower is not None:
            self.stats.incr(PARTIAL_RESUMES if follower.last_id else FULL_COPIES)
            self.role.remember_follower(follower.advertise)  # peers for an unclean restart
        log.info("replication_started", peer=peer.addr, name=follower.name if follower else "",
                 partition=hello.partition, offset=hello.offset, next_id=hello.next_id,
                 anonymous=follower is None)
        return Replication(hello.partition, hello.offset, hello.next_id, cmd.end,
                           rp.encode_hello_reply(hello), follower, self._refused_at,
                           lambda: self.role.whoami().epoch)

    def _refused_at(self) -> tuple[int, str] | None:
        """A refusing primary's final id (its head: nothing is written after
        REFUSE) and the new primary it names; None otherwise."""
        role = self.role
        if not role.refusing or role.replica:
            return None
        return self.log.head(), role.new_primary

    def _check_epochs(self, epochs: tuple[tuple[int, int], ...], peer: Peer) -> None:
        """A peer in a higher epoch than ours: another server was ACCEPTed since
        ours began. Refuse writes from now on (persisted), and this stream too.

        Raises:
            Refused: the peer's epoch is higher.
        """
        ours = self.role.whoami().epoch
        if not epochs or not ours or epochs[-1][0] <= ours:
            return
        theirs = epochs[-1][0]
        seen = f"{theirs} from {peer.addr}"
        if not self.role.higher_epoch_seen:
            log.error("higher_epoch_seen", epoch=ours, peer_epoch=theirs, peer=peer.addr)
        self.role.higher_epoch_seen = seen
        if not self.role.replica:
            self.role.refuse("", f"epoch {theirs} seen from {peer.addr}, above this server's {ours}")
        raise Refused(f"this server is in epoch {ours} and the peer in epoch {theirs}: it is no "
                      "longer the primary and takes no writes; do not follow it",
                      primary=self.role.new_primary or None)

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
        if follower is not None and follower.last_id and meta is not None:
            point = divergence(follower.epochs, meta.epochs, follower.last_id)
            if point is not None:  # the follower holds records this log never had
                raise Diverged(diverged_message(follower.epochs, meta.epochs, point, follower.last_id),
                               start, offset, point)
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
                               found[0].first_id, meta.epochs if meta is not None else ())

