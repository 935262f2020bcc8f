"""Application logic: one method per command, each returning a Reply.

``Handlers`` is plain code, callable without the queue or gevent, for tests;
the queue (``queue.py``) runs it for every command in order. The reply
types here are what the connection adapter (``server.py``) sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import msgpack
import structlog

from .. import protocol as p
from .. import stats as st
from ..config import FsyncMode, FsyncPolicy
from ..errors import Forbidden, NotRetained, OutOfRange, ShuttingDown, StorageError, UnknownCommand
from ..log import Log
from ..admin import AdminPolicy
from ..errors import Refused  # a read replica's MSG reply

__all__ = ["Handlers", "Stream", "WaitCommit", "CloseAfter", "Peer", "Reply"]

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
class WaitCommit:
    """Send ``reply`` once ``id`` is committed."""

    id: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class CloseAfter:
    """Send ``reply``, then close the connection."""

    reply: bytes


Reply = Union[bytes, Stream, WaitCommit, CloseAfter]


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
        self._table: dict[type, Callable[[Any, Peer], Reply]] = {
            p.Msg: self.msg,
            p.Read: self.read,
            p.Head: self.head,
            p.Ping: self.ping,
            p.Close: self.close,
            p.Shutdown: self.shutdown,
            p.Stats: self.stats_,
            p.Replicate: self.not_yet,
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
        return data

    def not_yet(self, cmd: p.Command, peer: Peer) -> Reply:
        raise UnknownCommand(f"{type(cmd).__name__.upper()} is not implemented in this version")
