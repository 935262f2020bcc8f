"""What this server is (primary, refusing, read replica) and the switch between them.

The two seams issue 10's second round builds on (the follower's fencing,
the unclean-restart peer check, ``logd failover``):

- ``Role.whoami()``: role, epoch, epoch history, the new primary if known,
  why it refuses; STATS shows it.
- ``Role.refuse()`` / ``Role.accept()``: perform the switch, persisting the
  role (and a new epoch) in the ``meta`` file (``meta.save``: atomic write,
  fsync, fsync of the directory) before they return, so before any reply
  and before the first write of a new epoch.

Roles:

``primary``
    takes MSG.
``refusing``
    a primary told to REFUSE (or that learned of a higher epoch): it keeps
    the writer lock and its log, serves reads, tails and followers, and
    answers MSG with ``ERR_CLIENT REFUSED``. Persisted: a restart, clean or
    not, comes back refusing.
``replica``
    a read replica (``logd serve --refuse``): the directory is another
    process's (a follower's); nothing here writes it. Promoting it (ACCEPT)
    is the daemon's job, since it swaps the log object (``promote``).

No sockets, no gevent: the handlers call it; the queue runs the handlers in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import structlog

from ..errors import Refused, StorageError
from ..log import meta as meta_mod

__all__ = ["Role", "Whoami", "PRIMARY", "REFUSING", "REPLICA"]

log = structlog.get_logger("logd.events")

PRIMARY, REFUSING, REPLICA = "primary", "refusing", "replica"


@dataclass(frozen=True, slots=True)
class Whoami:
    role: str
    epoch: int  # 0: unknown (a directory without meta)
    epochs: tuple[tuple[int, int], ...]
    new_primary: str  # "" when not known
    reason: str  # why it refuses ("" as primary)

    def stats(self) -> dict[str, Any]:
        return {"role": self.role, "epoch": self.epoch,
                "epochs": " ".join(f"{e}:{first}" for e, first in self.epochs),
                "new_primary": self.new_primary, "refusing_reason": self.reason}


class Role:
    """The role of one server process, over its log's ``meta``.

    ``log_`` is a FileLog (primary, refusing) or a LogReader (replica); the
    role is read from ``log_.meta`` (a writer's ``refusing`` role makes it
    refuse from the start), and from ``replica`` for a read-only log.
    """

    def __init__(self, log_: Any, replica: bool = False,
                 replica_refusal: Callable[[], Refused] | None = None) -> None:
        self.log = log_
        self.replica = replica
        self._replica_refusal = replica_refusal
        meta: meta_mod.Meta | None = getattr(log_, "meta", None)
        self.refusing = replica or (meta is not None and meta.role == REFUSING)
        self.new_primary = meta.primary if meta is not None and not replica else ""
        self.reason = "read replica" if replica else (
            "the meta file says refusing (a REFUSE before the last start)" if self.refusing else "")
        self.higher_epoch_seen = ""  # "<epoch> from <peer>", once seen

    @property
    def meta(self) -> meta_mod.Meta | None:
        m: meta_mod.Meta | None = getattr(self.log, "meta", None)
        return m

    def whoami(self) -> Whoami:
        meta = self.meta
        role = REPLICA if self.replica else REFUSING if self.refusing else PRIMARY
        primary = self.new_primary
        if self.replica and self._replica_refusal is not None:
            primary = self._replica_refusal().primary or ""
        return Whoami(role, meta.epoch if meta else 0, meta.epochs if meta else (), primary,
                      self.reason)

    def refusal(self) -> Refused:
        """The error a MSG gets while refusing."""
        if self.replica and self._replica_refusal is not None:
            return self._replica_refusal()
        where = "send writes to the new primary" if self.new_primary else \
            "the new primary is not known here"
        return Refused(f"this server refuses writes ({self.reason}); {where}",
                       primary=self.new_primary or None)

    # -- the switch ---------------------------------------------------------------------

    def refuse(self, new_primary: str, reason: str) -> None:
        """Stop taking writes from now on, persisted first.

        Raises:
            StorageError: the meta file could not be written; nothing changed.
        """
        meta = self.meta
        if self.replica or meta is None:  # a replica refuses already, and writes nothing
            self.refusing = True
            if new_primary:
                self.new_primary = new_primary
            return
        primary = new_primary or (meta.primary if meta.role == REFUSING else "")
        self._save(meta_mod.with_role(meta, REFUSING, primary))
        if not self.refusing:
            log.warning("refusing_writes", reason=reason, new_primary=primary, head=self.log.head())
        self.refusing, self.new_primary, self.reason = True, primary, reason

    def accept(self) -> tuple[int, int, bool]:
        """Take writes again (a refusing primary), in a new epoch beginning at
        the next id, persisted first. Returns ``(epoch, first id, changed)``;
        on a primary nothing changes.

        Raises:
            StorageError: the meta file could not be written; nothing changed.
        """
        meta = self.meta
        assert not self.replica  # the daemon promotes a replica first
        if meta is None:  # a log with no directory (tests' MemoryLog): nothing to persist
            changed, self.refusing = self.refusing, False
            return 0, self.log.head() + 1, changed
        if not self.refusing:
            return meta.epoch, meta.epochs[-1][1], False
        new = meta_mod.with_epoch(meta, self.log.head() + 1)
        self._save(new)
        self.refusing, self.new_primary, self.reason = False, "", ""
        self.higher_epoch_seen = ""
        log.warning("accepting_writes", epoch=new.epoch, first_id=new.epochs[-1][1])
        return new.epoch, new.epochs[-1][1], True

    def remember_follower(self, address: str) -> None:
        """Record a follower's advertised address in the meta file (once: a
        known one is not rewritten), for the unclean-restart peer check. A
        failed write is logged, not raised: the follower is served anyway."""
        meta = self.meta
        if self.replica or meta is None or not address or address in meta.followers:
            return
        try:
            self._save(meta_mod.with_follower(meta, address))
        except StorageError as exc:
            log.warning("follower_not_recorded", advertise=address, error=str(exc))
            return
        log.info("follower_recorded", advertise=address)

    def _save(self, meta: meta_mod.Meta) -> None:
        directory = self.log.directory
        try:
            meta_mod.save(directory, meta)
        except OSError as exc:
            raise StorageError(f"cannot write the metadata file in {directory}: "
                               f"{exc.strerror or exc}; the role is unchanged") from exc
        self.log.meta = meta
