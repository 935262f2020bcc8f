"""The follower's decisions, with no sockets or files: what a REPLICATE stream
may be written, and what an error from the primary means.

``Replicator`` stands at the follower's tail (partition, offset, last id).
It takes the primary's events (``logd.protocol.replication``) and returns
what to do: ``Write`` verified records at the tail, ``Roll`` to the next
partition. Every record is checked before it is handed out by
``record.scan_records`` (native when built): its header and CRC, its id (the
next one), its MSG chain (``more`` counts down to 0); and its place (a DATA
frame must start at the tail, and end where a MSG ends). Bytes of a MSG still arriving are held
until the MSG is whole, so only whole MSGs are ever written; they are
bounded by the primary's largest request.

The same scan picks the copy's sparse index entries (``SparseIndex.add``'s
rule, from the copy's ``index_due``), so a ``Write`` carries its record
count and those few entries, not a size per record.

Anything else raises ``BadStream`` naming the partition and offset: the
follower writes nothing of it, logs it and reconnects (from its own tail).

``exit_for(exc)`` maps a primary's refusal to the follower's exit code.
"""

from __future__ import annotations

from dataclasses import dataclass

from logd.errors import Diverged, LogdError, NotRetained
from logd.protocol.replication import Data, Next, PrimaryHello
from logd.record import scan_records

__all__ = ["BadStream", "Write", "Roll", "Replicator", "exit_for",
           "EXIT_NOTRETAINED", "EXIT_DIVERGED"]

EXIT_NOTRETAINED = 10  # the follower's position is no longer on the primary
EXIT_DIVERGED = 11  # another history, or the copies differ: nothing is touched


class BadStream(Exception):
    """What the primary sent cannot be written; says where."""

    def __init__(self, reason: str, partition: int, offset: int) -> None:
        super().__init__(f"{reason} (partition {partition} offset {offset})")
        self.reason = reason
        self.partition = partition
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Write:
    """Append ``data`` (whole MSGs: ``count`` records, ``first_id`` on) at the
    tail; ``points`` are its sparse index entries (``FileLog.append_records``)."""

    first_id: int
    data: bytes
    count: int
    points: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Roll:
    partition: int
    first_id: int


class Replicator:
    def __init__(self, partition: int, offset: int, last_id: int, last_crc: int = 0,
                 index_interval: int = 4096, index_due: int = 0) -> None:
        """``index_interval`` and ``index_due`` are the copy's sparse index
        (``FileLog.index_interval``, ``index_due()``): the scan picks its entries."""
        self.partition = partition
        self.offset = offset  # the tail: where the next byte goes
        self.last_id = last_id
        self.last_crc = last_crc
        self._held = bytearray()  # a MSG still arriving, verified so far record by record
        self._held_points: list[int] = []  # index entries (id, offset) of _held, then of a scan
        self._held_count = 0  # records verified in _held
        self._interval = index_interval
        self._due = index_due  # the offset the next index entry is due at
        self._more = 0  # records still due in the held MSG
        self._pending_len = 0  # bytes at the end of _held: a record still arriving

    @property
    def position(self) -> tuple[int, int, int]:
        """(partition, offset, id) written: whole MSGs only."""
        return self.partition, self.offset, self.last_id

    def on_hello(self, hello: PrimaryHello) -> Roll | None:
        """Check the primary starts where we asked; a new copy may start at
        another partition (the primary's first retained)."""
        if (hello.partition, hello.offset) == (self.partition, self.offset):
            if hello.next_id != self.last_id + 1:
                raise BadStream(f"the primary starts at id {hello.next_id}, not {self.last_id + 1}",
                                hello.partition, hello.offset)
            return None
        if self.last_id == 0 and self.offset == 0 and hello.offset == 0:
            self.partition = hello.partition
            self.last_id = hello.next_id - 1
            self._due = 0
            return Roll(hello.partition, hello.next_id)
        raise BadStream(f"the primary starts at {hello.partition}:{hello.offset}, "
                        f"not at our tail {self.partition}:{self.offset}", hello.partition, hello.offset)

    def on_next(self, nxt: Next) -> Roll:
        if self._held:
            raise BadStream("NEXT inside a MSG", self.partition, self.offset)
        if nxt.partition != self.partition + 1 or nxt.first_id != self.last_id + 1:
            raise BadStream(f"NEXT {nxt.partition} {nxt.first_id} does not follow partition "
                            f"{self.partition} (ending at id {self.last_id})", nxt.partition, 0)
        self.partition, self.offset = nxt.partition, 0
        self._due = 0
        return Roll(nxt.partition, nxt.first_id)

    def on_data(self, data: Data) -> Write | None:
        """Verify a chunk of a DATA frame; return the whole MSGs it completes."""
        at = self.offset + len(self._held)
        if (data.partition, data.offset) != (self.partition, at):
            raise BadStream(f"DATA for {data.partition}:{data.offset}, but our tail is "
                            f"{self.partition}:{at}", data.partition, data.offset)
        buf = self._held
        pos = len(buf) - self._pending_len
        buf += data.data
        first_id = self.last_id + 1
        points = self._held_points
        got = scan_records(buf, pos, first_id + self._held_count, self._more, self.last_crc, None,
                           points, self.offset, self._due, self._interval)
        if got.error is not None:
            raise BadStream(f"bad record from the primary: {got.error}", self.partition,
                            self.offset + got.end)
        self._due = got.due
        self._held_count = got.next_id - first_id
        out_end = got.batch_end if got.batch_end != pos else 0  # end of the whole MSGs in buf
        count = got.batch_id - self.last_id if out_end else 0
        self.last_crc = got.batch_crc
        self._more = got.more
        pos = got.end
        self._pending_len = len(buf) - pos  # bytes of a record still arriving
        if data.final and len(buf) != out_end:
            raise BadStream("DATA frame does not end where a MSG ends", self.partition,
                            self.offset + out_end)
        if not out_end:
            return None
        end = self.offset + out_end
        k = len(points)  # the entries of the records written: a few per DATA chunk
        while k and points[k - 1] >= end:
            k -= 2
        write = Write(first_id, bytes(buf[:out_end]), count, tuple(points[:k]))
        del points[:k]
        del buf[:out_end]
        self._held_count -= count
        self.offset = end
        self.last_id = first_id + count - 1
        return write


def exit_for(exc: LogdError) -> int | None:
    """The exit code for a primary's refusal, or None: reconnect and retry."""
    if isinstance(exc, NotRetained):
        return EXIT_NOTRETAINED
    if isinstance(exc, Diverged):
        return EXIT_DIVERGED
    return None
