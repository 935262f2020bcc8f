"""FileLog: the one writer of a data directory, on top of its read side.

Finding and reading records (``locate``, cursors, first id, head) is
``LogReader``'s (``reader.py``), which can also open a directory read-only.
This module adds what only the writer does: the lock, recovery at open,
appends, fsync, rolling partitions, retention, and the clean stop.

Layout of a data directory::

    0000000001-00000000000000000001.log   records with ids 1 ..
    0000000001-00000000000000000001.idx   its sparse index (a cache)
    0000000002-00000000000000001234.log   the next partition, from id 1234
    lock                                  flock()ed by the one writer, names it (lock.py)
    meta                                  format, history id, role, epochs (meta.py)
    clean-shutdown                        present only after a clean stop (marks.py)
    recovery-point                        what is verified and fsynced (marks.py)

Strategy: one writer appends whole batches with one ``write`` each; a batch
never straddles two partitions. A failed write is cut back with
``ftruncate`` so no partial record stays (the disk-full case). Durability is
``begin_sync`` / ``SyncPoint.run`` (fdatasync, run by the caller in a thread)
/ ``end_sync``. A failed fsync stops all further writes until restart: after
fsyncgate we cannot know what reached the disk.

On open (``recovery.py``), by default (``verify="auto"``), after a clean stop
each partition the clean marker covers is trusted once its size and last
record agree with it; after a crash only what follows the recovery point is
verified record by record (``marks.py`` describes both files); a directory
with neither is verified in full, as is everything with ``verify="full"``.
A torn tail of the last partition is copied aside to ``<partition>.trunc.N``
and cut; corruption in the middle of the log stops the open unless
``allow_corrupt``.
"""

from __future__ import annotations

import errno
import os
import time
from itertools import accumulate
from typing import Any, Callable, Sequence

import structlog

from ..errors import CorruptLogError, DiskFull, FsyncFailed, StorageError
from ..fsutil import fsync_dir
from ..record import encode_batch
from .index import SparseIndex
from .lock import WriterLock
from .meta import Meta, adopt
from .meta import new as new_meta
from .meta import save as save_meta
from .partition import Partition, parse_name, partition_name
from .marks import (CLEAN_MARKER, RECOVERY_POINT, CleanEntry, RecoveryPoint, read_clean, read_recovery_point,
                    write_clean, write_recovery_point)
from .reader import LogReader
from .recovery import Corrupt, recover_partition, trust_clean

__all__ = ["FileLog"]

log = structlog.get_logger("logd.log")

RECOVERY_POINT_EVERY = 1.0  # seconds: the bound on recovery-point writes (3 fsyncs each)
PROGRESS_EVERY = 2.0  # seconds between "verifying" log lines


class _SyncPoint:
    """What one fsync round covers. ``run`` is safe to call from a thread."""

    def __init__(
        self,
        head: int,
        position: tuple[int, int],
        fds: list[int],
        dir_path: str | None,
        fsync: Callable[[int], None],
        recovery_point: tuple[str, RecoveryPoint] | None = None,
    ) -> None:
        self.head = head
        self.position = position
        self.fds = fds
        self.dir_path = dir_path
        self._fsync = fsync
        self.recovery_point = recovery_point
        self.recovery_point_error: str | None = None
        self.seconds = 0.0  # how long the fsyncs took (for metrics)

    def run(self) -> None:
        began = time.monotonic()
        for fd in self.fds:
            self._fsync(fd)
        if self.dir_path is not None:
            fsync_dir(self.dir_path)
        self.seconds = time.monotonic() - began
        if self.recovery_point is not None:
            # Only now is everything up to it durable: say so, for the next start.
            # A failure (disk full) is not a failed fsync: the data is durable,
            # and an older point only means more to verify after a crash.
            try:
                write_recovery_point(*self.recovery_point)
            except OSError as exc:
                self.recovery_point_error = exc.strerror or str(exc)


class FileLog(LogReader):
    """The one writer, on top of the read side (``reader.py``)."""

    def __init__(
        self,
        directory: str,
        partition_size: int = 64 * 1024 * 1024,
        index_interval: int = 4096,
        fsync: bool = True,
        fsync_func: Callable[[int], None] = os.fdatasync,
        verify: str = "auto",
        allow_corrupt: bool = False,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        program: str | None = None,
        on_fsync: Callable[[float], None] | None = None,
        progress_every: float | None = None,  # None: PROGRESS_EVERY
        lock: WriterLock | None = None,  # already held (quarantine_from): the open takes it over
    ) -> None:
        # Called with each `verifying` line's fields (every PROGRESS_EVERY s while
        # the open verifies). It may raise to abort the open: it is called only
        # while a partition is being read, before anything of it is written.
        self._on_progress = on_progress
        self._progress_every = progress_every
        self._program = program  # who the lock file names (None: this process's command)
        self._held_lock = lock
        self.on_fsync = on_fsync  # called with each sync round's fsync seconds (metrics.py)
        self.partition_size = partition_size
        self.fsync_enabled = fsync
        self._fsync = fsync_func
        self.verify = verify  # "auto" | "full" | "tail": see _how_to_open
        self.allow_corrupt = allow_corrupt
        self._fd = -1  # write fd of the active partition
        self._unsynced_fds: list[int] = []  # sealed partitions awaiting fsync
        self._dir_dirty = False
        self._failed: StorageError | None = None
        self.last_write_error: str | None = None
        self.recovered_clean = False
        self.bytes_dropped = 0
        self._lock: WriterLock | None = None
        self._rp_due = 0.0  # monotonic time after which a sync may write the recovery point
        self.opened_how: dict[str, int] = {}  # partitions by how they were checked at open
        super().__init__(directory, index_interval)  # runs _open below: lock, then recovery

    # -- opening ------------------------------------------------------------------

    def _open(self) -> None:
        """The writer's open: take the lock, then recover (verify and repair)."""
        os.makedirs(self.directory, exist_ok=True)
        lock = self._lock = self._held_lock or WriterLock.acquire(self.directory, self._program)  # raises DirectoryLocked, naming the holder
        try:
            self.meta: Meta = adopt(self.directory)  # before any repair: a bad meta file stops the open
            self._recover()
        except BaseException:
            lock.release()
            raise

    def _recover(self) -> None:
        clean = read_clean(self.directory)
        self.recovered_clean = clean is not None
        if isinstance(clean, str):
            log.warning("clean_marker_unusable", reason=clean, verify="full")
        rp = read_recovery_point(self.directory) if clean is None else None
        if isinstance(rp, str):
            log.warning("recovery_point_ignored", reason=rp, verify="full")
            rp = None
        found = sorted(
            (parsed, name)
            for name in os.listdir(self.directory)
            if (parsed := parse_name(name)) is not None
        )
        if not found:
            self._partitions = [self._new_partition(1, 1)]
        progress = _Progress(
            len(found), sum(_size_of(os.path.join(self.directory, n)) for _, n in found), self._on_progress,
            self._progress_every,
        )
        how_counts: dict[str, int] = {}
        bad_tail: tuple[Partition, int, int] | None = None
        for i, ((number, first_id), name) in enumerate(found):
            p = Partition(number, first_id, os.path.join(self.directory, name))
            if self._partitions:
                prev = self._partitions[-1]
                if bad_tail is not None:  # ids lost at the end of prev: known now
                    _, offset, bad_id = bad_tail
                    self._corrupt.append(Corrupt(bad_id, first_id - 1, prev.number, offset, prev.size))
                    prev.last_id = first_id - 1
                    bad_tail = None
                if number != prev.number + 1 or first_id != prev.last_id + 1:
                    raise CorruptLogError(
                        f"partition {name} does not follow partition {prev.number} "
                        f"(which ends at id {prev.last_id})",
                        partition=number,
                    )
            is_last = i == len(found) - 1
            how, start = self._how_to_open(number, is_last, clean, rp)
            if how == "clean":
                assert isinstance(clean, dict)
                problem = trust_clean(p, clean[number], self.index_interval)
                if problem is None:
                    how_counts[how] = how_counts.get(how, 0) + 1
                    progress.skip(p.size)
                    self._partitions.append(p)
                    continue
                if not problem.startswith("index"):  # index_ignored is logged by the scan
                    log.warning("clean_marker_mismatch", partition=number, reason=problem, verify="full")
                how = "full"
            how_counts[how] = how_counts.get(how, 0) + 1
            progress.begin(number)
            got = recover_partition(p, is_last, how == "full", self.allow_corrupt,
                                    self.index_interval, start, progress.advance)
            progress.end(p.size)
            self._corrupt.extend(got.corrupt)
            self.bytes_dropped += got.bytes_dropped
            if got.bad_tail is not None:
                bad_tail = (p, *got.bad_tail)
            self._partitions.append(p)
        self.opened_how = how_counts
        progress.done(how_counts)
        active = self._partitions[-1]
        # An empty last partition left by a crash between creating it and writing it.
        if active.size == 0 and len(self._partitions) > 1:
            os.unlink(active.path)
            self._remove_index(active)
            self._partitions.pop()
            active = self._partitions[-1]
        self._firsts = [p.first_id for p in self._partitions]
        self._head = active.last_id
        self._synced = self._head
        self._synced_pos = (active.number, active.size)
        self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # All of it is verified and durable now (recovery fsyncs what it read):
        # the next start, after a crash, verifies only what follows. Then the
        # clean marker goes: from here on, writes make it stale.
        try:
            write_recovery_point(self.directory, RecoveryPoint(active.number, active.size, self._head))
        except OSError as exc:  # e.g. a full disk: the log opens; a crash costs more verification
            log.warning("recovery_point_not_saved", error=exc.strerror or str(exc))
        self._rp_due = time.monotonic() + RECOVERY_POINT_EVERY
        if self.recovered_clean:
            os.unlink(os.path.join(self.directory, CLEAN_MARKER))
        self._fsync_dir()
        log.info(
            "log_opened",
            directory=self.directory,
            clean=self.recovered_clean,
            first_id=self.first_id(),
            head=self._head,
            partitions=len(self._partitions),
            corrupt_records=sum(c.last - c.first + 1 for c in self._corrupt),
            bytes_dropped=self.bytes_dropped,
        )

    def _how_to_open(
        self, number: int, is_last: bool, clean: object, rp: RecoveryPoint | None
    ) -> tuple[str, tuple[int, int] | None]:
        """How to check partition ``number`` at open: "clean" (the marker's
        entry), "partial" (verify after the recovery point or the index's last
        entry), or "full"; and where a partial check starts."""
        if self.verify == "full":
            return "full", None
        if self.verify == "tail":  # trust sane indexes; the active one in full after a crash
            return ("full" if is_last and not self.recovered_clean else "partial"), None
        if isinstance(clean, dict):
            return ("clean" if number in clean else "full"), None
        if rp is None:
            return "full", None  # an older logd's directory, or the marker was unusable
        if number < rp.partition:
            return "partial", None
        if number == rp.partition:
            return "partial", (rp.offset, rp.id)
        return "full", None

    def _clean_entries(self) -> list[CleanEntry]:
        """What the clean marker vouches for: each partition's size and last
        record. Partitions with known corrupt records are left out, so the
        next open scans them again and still knows where the damage is."""
        damaged = {c.partition for c in self._corrupt}
        out = []
        for p in self._partitions:
            if p.number in damaged:
                continue
            if p.size == 0:
                out.append(CleanEntry(p.number, p.first_id, p.last_id, 0, -1))
                continue
            try:
                _, offset = self.locate(p.last_id)
            except (CorruptLogError, KeyError, OSError):
                continue
            out.append(CleanEntry(p.number, p.first_id, p.last_id, p.size, offset))
        return out

    def _new_partition(self, number: int, first_id: int) -> Partition:
        path = os.path.join(self.directory, partition_name(number, first_id))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.close(fd)
        self._dir_dirty = True
        return Partition(number, first_id, path, 0, first_id - 1, SparseIndex(self.index_interval))

    def _remove_index(self, p: Partition) -> None:
        try:
            os.unlink(p.idx_path)
        except FileNotFoundError:
            pass

    def _fsync_dir(self) -> None:
        fsync_dir(self.directory)

    # -- state ----------------------------------------------------------------------

    @property
    def failed(self) -> StorageError | None:
        return self._failed

    def stats(self) -> dict[str, object]:
        out = super().stats()
        corrupt = out.pop("corrupt_records")  # the keys keep the order STATS has always had
        out.update(synced_partition=self._synced_pos[0], synced_offset=self._synced_pos[1],
                   write_error=self.last_write_error or "", corrupt_records=corrupt,
                   failed=str(self._failed) if self._failed else "")
        return out

    # -- writing ----------------------------------------------------------------------

    def append(self, bodies: Sequence[bytes]) -> int:
        """Append the bodies as consecutive records; return the last id.

        Raises:
            DiskFull: no space; nothing was written.
            StorageError: another write failure, or writes stopped after a failed fsync.
        """
        if self._failed is not None:
            raise self._failed
        first = self._head + 1
        data, sizes = encode_batch(first, bodies)
        p = self._partitions[-1]
        if p.size and p.size + len(data) > self.partition_size:
            p = self._roll(first)
        start = p.size
        self._write_bytes(p, data)
        end = start + len(data)
        if p.index.due(start) < end:  # most small MSGs make no index entry: skip the starts
            # Record starts, in C; then one bisect per index entry, not a Python
            # step per record.
            p.index.add_run(first, list(accumulate(sizes, initial=start)), len(sizes))
        return self._advance(p, end, first + len(sizes) - 1)

    def index_due(self) -> int:
        """The offset in the active partition from which its sparse index wants
        its next entry (``append_records``' points start there)."""
        p = self._partitions[-1]
        return p.index.due(p.size)

    def append_records(self, first: int, data: bytes, count: int, points: Sequence[int]) -> int:
        """Append records already encoded and verified (a follower copying its
        primary's bytes): ``data`` holds ``count`` records (whole MSGs) from
        ``first``. Never rolls: the primary says where partitions begin
        (``roll_to``). Returns the last id. ``points`` (flat ``id, offset``,
        offsets in the active partition) are the entries ``SparseIndex.add``
        would make for them from ``index_due()`` on: ``record.scan_records``
        picks them while it verifies, so no Python step runs per record.

        Raises:
            ValueError: ``first`` is not the next id, or a point is not due.
            DiskFull, StorageError: as ``append``.
        """
        if self._failed is not None:
            raise self._failed
        if first != self._head + 1:
            raise ValueError(f"records from {first} do not follow the head {self._head}")
        p = self._partitions[-1]
        start = p.size
        if points and not (p.index.due(start) <= points[1] and points[-1] < start + len(data)):
            raise ValueError(f"index entries at {points[1]}-{points[-1]} are not due or outside the "
                             f"records written ({p.index.due(start)}, {start}-{start + len(data)})")
        self._write_bytes(p, data)
        p.index.add_points(points)
        return self._advance(p, start + len(data), first + count - 1)

    def roll_to(self, number: int, first_id: int) -> None:
        """Begin partition ``number`` at id ``first_id``, as the primary did.

        The active partition is sealed, unless it is the only one and empty (a
        new copy starting where the primary's retained log starts): then it is
        replaced by the one named.

        Raises:
            ValueError: it does not follow the active partition and the head.
            StorageError: the file could not be made.
        """
        active = self._partitions[-1]
        if len(self._partitions) == 1 and active.size == 0:
            if (number, first_id) == (active.number, active.first_id):
                return
            new = self._new_partition(number, first_id)
            fd = os.open(new.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            os.close(self._fd)
            os.unlink(active.path)
            self._remove_index(active)
            self._fd = fd
            self._partitions[:] = [new]
            self._firsts[:] = [first_id]
            self._head = self._synced = first_id - 1
            self._synced_pos = (number, 0)
            return
        if number != active.number + 1 or first_id != self._head + 1:
            raise ValueError(f"partition {number} from id {first_id} does not follow partition "
                             f"{active.number} (which ends at id {self._head})")
        self._roll(first_id)

    def adopt_history(self, history: str) -> None:
        """Make this (still empty) copy part of ``history``: a follower's first
        copy takes its primary's. Never on a log with records.

        Raises:
            ValueError: the log has records.
            StorageError: the meta file could not be written.
        """
        if self._head or len(self._partitions) > 1:
            raise ValueError("a log with records keeps its history")
        meta = new_meta(history=history, role="replica")
        try:
            save_meta(self.directory, meta)
        except OSError as exc:
            raise StorageError(f"cannot write the metadata file: {exc.strerror or exc}") from exc
        self.meta = meta
        log.info("history_adopted", history=history)

    def adopt_epochs(self, epochs: tuple[tuple[int, int], ...]) -> bool:
        """A follower's copy takes its primary's epoch history (the handshake
        checked the copy agrees with it up to its head), so that once promoted
        its ACCEPT starts the primary's last epoch + 1. True: the file changed.

        Raises:
            StorageError: the meta file could not be written; nothing changed.
        """
        meta = self.meta
        if not epochs or epochs == meta.epochs:
            return False
        new = Meta(meta.format, meta.history, meta.created, meta.role, tuple(epochs), meta.primary)
        try:
            save_meta(self.directory, new)
        except OSError as exc:
            raise StorageError(f"cannot write the metadata file: {exc.strerror or exc}") from exc
        self.meta = new
        log.info("epochs_adopted", epochs=" ".join(f"{e}:{f}" for e, f in epochs))
        return True

    def quarantine_from(self, point: int, epoch: int) -> tuple[str, int, WriterLock]:
        """Move records ``point``..head (a follower's divergent suffix) aside
        and cut the copy before ``point``; returns ``(quarantine file, records
        moved, the writer lock)``. The log is closed, its lock kept: reopen
        with ``FileLog(directory, ..., lock=lock)``.

        The file is ``quarantine-<epoch>-<point>-<head>.log`` next to the
        partitions, in the partition format (``logd dump`` reads it), written
        and fsynced before anything is cut. The cut is recovery's: later
        partitions removed, the one holding ``point`` truncated there, and
        their indexes, the recovery point and the clean marker removed, so the
        reopen verifies what is left; then a directory fsync. The epochs that
        begin after the cut are dropped from the meta file.

        Raises:
            ValueError: ``point`` is not an id of this log.
            OSError: the copy or the cut failed (the copy is written first).
        """
        head = self._head
        if not self.first_id() <= point <= head:
            raise ValueError(f"no record {point} in this log (ids {self.first_id()}..{head})")
        name = f"quarantine-{epoch}-{point}-{head}.log"
        path, tmp = os.path.join(self.directory, name), os.path.join(self.directory, name + ".tmp")
        cut_at = self.locate(point)
        with open(tmp, "wb") as out, self.cursor(point) as cursor:
            for fd, offset, count in cursor.ranges(head + 1):
                while count:
                    chunk = os.pread(fd, min(count, 1 << 20), offset)
                    if not chunk:
                        raise OSError(errno.EIO, "partition shorter than its index")
                    out.write(chunk)
                    offset, count = offset + len(chunk), count - len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
        fsync_dir(self.directory)
        lock, self._lock = self._lock, None
        assert lock is not None
        self.close()
        keep, offset = cut_at
        for p in self._partitions:
            if p.number > keep.number:
                os.unlink(p.path)
            if p.number >= keep.number:
                self._remove_index(p)
        with open(keep.path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
        for mark in (CLEAN_MARKER, RECOVERY_POINT):
            try:
                os.unlink(os.path.join(self.directory, mark))
            except FileNotFoundError:
                pass
        epochs = tuple(e for e in self.meta.epochs if e[1] < point) or self.meta.epochs[:1]
        meta = self.meta
        save_meta(self.directory, Meta(meta.format, meta.history, meta.created, meta.role, epochs,
                                       meta.primary))
        fsync_dir(self.directory)
        log.warning("suffix_quarantined", file=path, first_id=point, last_id=head, epoch=epoch,
                    partition=keep.number, offset=offset)
        return path, head - point + 1, lock

    def _write_bytes(self, p: Partition, data: bytes) -> None:
        start = p.size
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self._undo_write(p, start, exc)
        self.last_write_error = None

    def _advance(self, p: Partition, size: int, last_id: int) -> int:
        p.size = size
        p.last_id = last_id
        self._head = last_id
        return last_id

    def _undo_write(self, p: Partition, start: int, exc: OSError) -> None:
        self.last_write_error = f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
        try:
            os.ftruncate(self._fd, start)
        except OSError as exc2:
            self._failed = StorageError(
                f"write failed ({exc.strerror}) and could not be undone ({exc2.strerror}); "
                "restart required"
            )
            raise self._failed from exc2
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull("no space left on device; nothing written") from exc
        raise StorageError(f"write failed: {exc.strerror}; nothing written") from exc

    def _roll(self, first_id: int) -> Partition:
        old = self._partitions[-1]
        try:
            new = self._new_partition(old.number + 1, first_id)
            fd = os.open(new.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull("no space left for a new partition") from exc
            raise StorageError(f"cannot create a partition: {exc.strerror}") from exc
        if self.fsync_enabled:
            self._unsynced_fds.append(self._fd)
        else:
            os.close(self._fd)
        self._fd = fd
        old.index.save(old.idx_path)
        self._partitions.append(new)
        self._firsts.append(first_id)
        log.info("partition_rolled", partition=new.number, first_id=first_id)
        return new

    def begin_sync(self) -> _SyncPoint:
        active = self._partitions[-1]
        dir_path = self.directory if self._dir_dirty else None
        self._dir_dirty = False
        rp = None
        now = time.monotonic()
        if now >= self._rp_due:
            self._rp_due = now + RECOVERY_POINT_EVERY
            rp = (self.directory, RecoveryPoint(active.number, active.size, self._head))
            # The entries up to the point, so that after a crash the active
            # partition is scanned from the point, not from its start. A cache:
            # appended without fsync; a torn .idx is rebuilt.
            try:
                active.index.save_new(active.idx_path)
            except OSError:
                pass
        return _SyncPoint(
            self._head,
            (active.number, active.size),
            [*self._unsynced_fds, self._fd],
            dir_path,
            self._fsync,
            rp,
        )

    def end_sync(self, point: _SyncPoint) -> None:
        for fd in point.fds[:-1]:
            self._unsynced_fds.remove(fd)
            os.close(fd)
        if self.on_fsync is not None:
            self.on_fsync(point.seconds)  # here, in the caller's greenlet, not in run's thread
        if point.head > self._synced:
            self._synced = point.head
            self._synced_pos = point.position
        if point.recovery_point_error is not None:
            log.warning("recovery_point_not_saved", error=point.recovery_point_error)
        # The active index is saved at roll, close and with each recovery point.

    def fail_sync(self, exc: BaseException) -> FsyncFailed:
        """An fsync failed: stop writes for good (see the module docstring)."""
        self._failed = FsyncFailed(f"fsync failed ({exc}); writes stopped until restart")
        self.last_write_error = str(self._failed)
        return self._failed

    # -- retention --------------------------------------------------------------------

    def retain(self, max_bytes: int = 0, max_age: float = 0.0, now: float | None = None,
               before: int = 0) -> list[int]:
        """Delete whole sealed partitions, oldest first, past either limit (or
        numbered below ``before``: a follower applying its primary's retention).

        Never the active partition. Readers with a deleted partition open keep
        reading it (an open fd outlives the unlink). Returns the numbers deleted.
        """
        now = time.time() if now is None else now
        deleted = []
        total = sum(p.size for p in self._partitions)
        while len(self._partitions) > 1:
            oldest = self._partitions[0]
            too_big = max_bytes and total > max_bytes
            try:
                age = now - os.stat(oldest.path).st_mtime
            except FileNotFoundError:
                age = float("inf")
            too_old = max_age and age > max_age
            too_low = oldest.number < before
            if not (too_big or too_old or too_low):
                break
            self._partitions.pop(0)
            self._firsts.pop(0)
            total -= oldest.size
            fd = self._read_fds.pop(oldest.number, None)
            if fd is not None:
                os.close(fd)
            for path in (oldest.path, oldest.idx_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            self._corrupt = [c for c in self._corrupt if c.partition != oldest.number]
            deleted.append(oldest.number)
            log.info("partition_deleted", partition=oldest.number, first_id=oldest.first_id,
                     last_id=oldest.last_id, bytes=oldest.size,
                     reason="primary" if too_low else "size" if too_big else "age")
        if deleted:
            self._fsync_dir()
        return deleted

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Flush everything, save the indexes, leave the clean marker."""
        if self._fd < 0:
            return
        clean = self._failed is None
        if clean:
            point = self.begin_sync()
            point.run()
            self.end_sync(point)
        for fd in [*self._unsynced_fds, self._fd]:
            os.close(fd)
        self._unsynced_fds.clear()
        super().close()
        self._fd = -1
        self._partitions[-1].index.save(self._partitions[-1].idx_path)
        if clean:
            try:
                write_clean(self.directory, self._head, time.time(), self._clean_entries())
            except OSError as exc:  # the next start takes the crash path: slower, as correct
                log.warning("clean_marker_not_saved", error=exc.strerror or str(exc))
                clean = False
        if self._lock is not None:
            self._lock.release()
        log.info("log_closed", head=self._head, clean=clean)


def _size_of(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class _Progress:
    """``verifying`` log lines while the open scans partitions (at most one
    every PROGRESS_EVERY seconds), and one ``log_verified`` at the end."""

    def __init__(self, partitions: int, total: int,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 every: float | None = None) -> None:
        self.on_progress = on_progress
        self.every = PROGRESS_EVERY if every is None else every
        self.partitions = partitions
        self.total = total
        self.done_parts = 0
        self.verified = 0  # bytes scanned record by record
        self.trusted = 0  # bytes taken on the clean marker's word
        self.partition = 0
        self.began = time.monotonic()
        self.next_line = self.began + self.every
        self.announced = False

    def skip(self, nbytes: int) -> None:
        self.done_parts += 1
        self.trusted += nbytes

    def begin(self, number: int) -> None:
        self.partition = number
        if not self.announced:  # say so at once, then every few seconds
            self.announced = True
            self.next_line = 0.0
            self.advance(0)

    def advance(self, nbytes: int) -> None:
        self.verified += nbytes
        now = time.monotonic()
        if now >= self.next_line:
            self.next_line = now + self.every
            seconds = now - self.began
            fields = dict(partition=self.partition,
                          partitions_done=self.done_parts, partitions=self.partitions,
                          verified_mib=round(self.verified / 2**20, 1),
                          total_mib=round(self.total / 2**20, 1),
                          mib_per_s=round(self.verified / 2**20 / seconds, 1) if seconds else 0.0)
            log.info("verifying", **fields)
            if self.on_progress is not None:
                self.on_progress(fields)

    def end(self, size: int) -> None:
        self.done_parts += 1

    def done(self, how: dict[str, int]) -> None:
        seconds = time.monotonic() - self.began
        log.info("log_verified", partitions=self.partitions, seconds=round(seconds, 3),
                 verified_mib=round(self.verified / 2**20, 1),
                 trusted_mib=round(self.trusted / 2**20, 1),
                 mib_per_s=round(self.verified / 2**20 / seconds, 1) if seconds else 0.0,
                 **{f"partitions_{k}": v for k, v in sorted(how.items())})
