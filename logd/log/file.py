"""FileLog: the log as partition files on disk, with a sparse index each.

Layout of a data directory::

    0000000001-00000000000000000001.log   records with ids 1 ..
    0000000001-00000000000000000001.idx   its sparse index (a cache)
    0000000002-00000000000000001234.log   the next partition, from id 1234
    lock                                  flock()ed by the one writing process
    clean-shutdown                        present only after a clean stop

Strategy: one writer appends whole batches with one ``write`` each; a batch
never straddles two partitions. A failed write is cut back with
``ftruncate`` so no partial record stays (the disk-full case). Durability is
``begin_sync`` / ``SyncPoint.run`` (fdatasync, run by the caller in a thread)
/ ``end_sync``. A failed fsync stops all further writes until restart: after
fsyncgate we cannot know what reached the disk.

On open (``recovery.py``) every record is verified by default
(``verify="tail"`` trusts sane indexes instead); a torn tail of the last
partition is copied aside to ``<partition>.trunc.N`` and cut; corruption in
the middle of the log stops the open unless ``allow_corrupt``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from bisect import bisect_left, bisect_right
from itertools import accumulate
from typing import Callable, Iterator, Sequence

import structlog

from ..errors import CorruptLogError, DiskFull, FsyncFailed, NotRetained, StorageError
from ..record import MAX_HEADER, Record, encode_batch, parse
from . import Span
from .index import SparseIndex
from .partition import Partition, parse_name, partition_name
from .recovery import Corrupt, recover_partition

__all__ = ["FileLog"]

log = structlog.get_logger("logd.log")

CLEAN_MARKER = "clean-shutdown"
LOCK_FILE = "lock"


class _SyncPoint:
    """What one fsync round covers. ``run`` is safe to call from a thread."""

    def __init__(
        self,
        head: int,
        position: tuple[int, int],
        fds: list[int],
        dir_path: str | None,
        fsync: Callable[[int], None],
    ) -> None:
        self.head = head
        self.position = position
        self.fds = fds
        self.dir_path = dir_path
        self._fsync = fsync

    def run(self) -> None:
        for fd in self.fds:
            self._fsync(fd)
        if self.dir_path is not None:
            dfd = os.open(self.dir_path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


class FileLog:
    def __init__(
        self,
        directory: str,
        partition_size: int = 64 * 1024 * 1024,
        index_interval: int = 4096,
        fsync: bool = True,
        fsync_func: Callable[[int], None] = os.fdatasync,
        verify: str = "full",
        allow_corrupt: bool = False,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.partition_size = partition_size
        self.index_interval = index_interval
        self.fsync_enabled = fsync
        self._fsync = fsync_func
        self.verify = verify  # "full": check every record at open; "tail": trust sane indexes
        self.allow_corrupt = allow_corrupt
        self._corrupt: list[Corrupt] = []
        self._partitions: list[Partition] = []
        self._firsts: list[int] = []  # first ids, for bisect
        self._fd = -1  # write fd of the active partition
        self._unsynced_fds: list[int] = []  # sealed partitions awaiting fsync
        self._dir_dirty = False
        self._read_fds: dict[int, int] = {}
        self._recent: dict[int, tuple[Partition, int]] = {}  # id -> position, a few recent
        self._head = 0
        self._synced = 0
        self._synced_pos: tuple[int, int] = (0, 0)
        self._failed: StorageError | None = None
        self.last_write_error: str | None = None
        self.recovered_clean = False
        self.bytes_dropped = 0
        self._lock_fd = -1
        self._open()

    # -- opening ------------------------------------------------------------------

    def _open(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        self._lock_fd = os.open(
            os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StorageError(f"data dir {self.directory} is in use by another process") from None
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _recover(self) -> None:
        marker = os.path.join(self.directory, CLEAN_MARKER)
        self.recovered_clean = os.path.exists(marker)
        found = sorted(
            (parsed, name)
            for name in os.listdir(self.directory)
            if (parsed := parse_name(name)) is not None
        )
        if not found:
            self._partitions = [self._new_partition(1, 1)]
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
            full = self.verify == "full" or (is_last and not self.recovered_clean)
            got = recover_partition(p, is_last, full, self.allow_corrupt, self.index_interval)
            self._corrupt.extend(got.corrupt)
            self.bytes_dropped += got.bytes_dropped
            if got.bad_tail is not None:
                bad_tail = (p, *got.bad_tail)
            self._partitions.append(p)
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
        if self.recovered_clean:
            os.unlink(marker)
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
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- state ----------------------------------------------------------------------

    def head(self) -> int:
        return self._head

    def first_id(self) -> int:
        return self._partitions[0].first_id

    def synced_head(self) -> int:
        return self._synced

    @property
    def failed(self) -> StorageError | None:
        return self._failed

    def partitions(self) -> list[Partition]:
        return list(self._partitions)

    def stats(self) -> dict[str, object]:
        return {
            "partitions": len(self._partitions),
            "active_partition": self._partitions[-1].number,
            "bytes": sum(p.size for p in self._partitions),
            "synced_partition": self._synced_pos[0],
            "synced_offset": self._synced_pos[1],
            "write_error": self.last_write_error or "",
            "corrupt_records": sum(c.last - c.first + 1 for c in self._corrupt),
            "failed": str(self._failed) if self._failed else "",
        }

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
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self._undo_write(p, start, exc)
        self.last_write_error = None
        # Record starts, in C; then one bisect per index entry, not a Python
        # step per record.
        starts = list(accumulate(sizes, initial=start))
        index = p.index
        interval = index.interval
        due = (index.offsets[-1] + interval) if index.offsets else start
        k = bisect_left(starts, due, 0, len(sizes))
        while k < len(sizes):
            index.ids.append(first + k)
            index.offsets.append(starts[k])
            k = bisect_left(starts, starts[k] + interval, k + 1, len(sizes))
        p.size = starts[-1]
        p.last_id = first + len(sizes) - 1
        self._head = p.last_id
        return self._head

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
        self._recent.clear()
        self._partitions.append(new)
        self._firsts.append(first_id)
        log.info("partition_rolled", partition=new.number, first_id=first_id)
        return new

    def begin_sync(self) -> _SyncPoint:
        active = self._partitions[-1]
        dir_path = self.directory if self._dir_dirty else None
        self._dir_dirty = False
        return _SyncPoint(
            self._head,
            (active.number, active.size),
            [*self._unsynced_fds, self._fd],
            dir_path,
            self._fsync,
        )

    def end_sync(self, point: _SyncPoint) -> None:
        for fd in point.fds[:-1]:
            self._unsynced_fds.remove(fd)
            os.close(fd)
        if point.head > self._synced:
            self._synced = point.head
            self._synced_pos = point.position
        # The active index is saved at roll and close only: after a crash the
        # active partition is scanned whole anyway.

    def fail_sync(self, exc: BaseException) -> FsyncFailed:
        """An fsync failed: stop writes for good (see the module docstring)."""
        self._failed = FsyncFailed(f"fsync failed ({exc}); writes stopped until restart")
        self.last_write_error = str(self._failed)
        return self._failed

    # -- reading ----------------------------------------------------------------------

    def _partition_of(self, id: int) -> Partition:
        i = bisect_right(self._firsts, id) - 1
        if i < 0:
            raise KeyError(id)
        return self._partitions[i]

    def _read_fd(self, p: Partition) -> int:
        fd = self._read_fds.get(p.number)
        if fd is None:
            fd = self._read_fds[p.number] = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def locate(self, id: int) -> tuple[Partition, int]:
        """The partition holding ``id`` and the offset of its record.

        ``id`` may be head+1: the end of the active partition.
        """
        active = self._partitions[-1]
        if id == self._head + 1:
            return active, active.size
        if id == self._synced + 1 and self._synced_pos[0] == active.number:
            return active, self._synced_pos[1]
        cached = self._recent.get(id)
        if cached is not None:
            return cached
        p = self._partition_of(id)
        if id == p.last_id + 1:
            return p, p.size
        for bad in self._corrupt:
            if bad.first == id:
                return p, bad.start
        # Even an exact index hit is checked against the record header below:
        # the index is a cache, and a wrong entry must not serve a wrong record.
        entry_id, off = p.index.floor(id)
        fd = self._read_fd(p)
        block = b""
        base = off
        cur = entry_id
        while True:
            rel = off - base
            nl = block.find(b"\r\n", rel, rel + MAX_HEADER)
            if nl < 0:
                base = off
                block = os.pread(fd, 65536, off)
                rel = 0
                nl = block.find(b"\r\n", 0, MAX_HEADER)
                if nl < 0:
                    raise CorruptLogError(
                        f"no record header at offset {off}", partition=p.number, offset=off, id=cur
                    )
            fields = block[rel + 1 : nl].split(b" ")
            if int(fields[0]) != cur:
                raise CorruptLogError(
                    f"expected id {cur} at offset {off}", partition=p.number, offset=off, id=cur
                )
            if cur == id:
                return p, off
            off = base + nl + 2 + int(fields[1]) + 2
            cur += 1

    def spans(self, start: int, end: int) -> Iterator[Span]:
        if start >= end:
            return
        if start < self._firsts[0]:
            raise NotRetained(f"id {start} is no longer retained", first=self._firsts[0], head=self._head)
        p, off = self.locate(start)
        while True:
            if end <= p.last_id + 1:
                _, stop = self.locate(end) if end <= p.last_id else (p, p.size)
                # A stream's next call starts where this one ends: remember it,
                # so a tail reader never rescans for its position.
                # The end of a sealed partition is also the start of the next:
                # cache only canonical names (the cache is cleared at each roll).
                if stop < p.size or p is self._partitions[-1]:
                    if len(self._recent) > 256:
                        self._recent.clear()
                    self._recent[end] = (p, stop)
                if stop > off:
                    yield p.path, off, stop - off
                return
            if p.size > off:
                yield p.path, off, p.size - off
            # Retention may have deleted partitions while the caller sent that
            # span (issue 7 item 3): find the next one by id, never by a list
            # position held across the yield.
            p = self._following(p)
            off = 0

    def _following(self, p: Partition) -> Partition:
        """The partition after ``p``, found by id.

        Raises:
            NotRetained: retention deleted it.
        """
        next_id = p.last_id + 1
        i = bisect_right(self._firsts, next_id) - 1
        if i < 0 or self._partitions[i].first_id != next_id:
            raise NotRetained(f"records from {next_id} were deleted by retention",
                              first=self._firsts[0], head=self._head)
        return self._partitions[i]

    def corrupt_between(self, start: int, end: int) -> Corrupt | None:
        """The first known-bad range overlapping ids ``[start, end)``."""
        for bad in self._corrupt:
            if bad.first < end and bad.last >= start:
                return bad
        return None

    def first_id_of(self, number: int) -> int | None:
        """First id of partition ``number``, if it is still retained."""
        for p in self._partitions:
            if p.number == number:
                return p.first_id
        return None

    # -- retention --------------------------------------------------------------------

    def retain(self, max_bytes: int = 0, max_age: float = 0.0, now: float | None = None) -> list[int]:
        """Delete whole sealed partitions, oldest first, past either limit.

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
            if not (too_big or too_old):
                break
            self._partitions.pop(0)
            self._firsts.pop(0)
            self._recent.clear()
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
                     reason="size" if too_big else "age")
        if deleted:
            self._fsync_dir()
        return deleted

    def read(self, start: int, end: int) -> list[Record]:
        end = min(end, self._head + 1)
        out: list[Record] = []
        for path, off, length in self.spans(start, end):
            assert isinstance(path, str)  # FileLog spans are always files
            with open(path, "rb") as f:
                data = os.pread(f.fileno(), length, off)
            pos = 0
            while pos < len(data):
                got = parse(data, pos)
                if got is None:
                    raise CorruptLogError(f"incomplete record in {path} at {off + pos}")
                out.append(got[0])
                pos = got[1]
        return out

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
        for fd in [*self._unsynced_fds, self._fd, *self._read_fds.values()]:
            os.close(fd)
        self._unsynced_fds.clear()
        self._read_fds.clear()
        self._fd = -1
        self._partitions[-1].index.save(self._partitions[-1].idx_path)
        if clean:
            marker = os.path.join(self.directory, CLEAN_MARKER)
            with open(marker, "w") as f:
                f.write(f"head={self._head} time={time.time():.3f}\n")
                f.flush()
                os.fsync(f.fileno())
            self._fsync_dir()
        os.close(self._lock_fd)
        log.info("log_closed", head=self._head, clean=clean)
