"""Offline tools: ``logd check DIR [--fix]`` and ``logd dump PARTITION`` (or a quarantine file).

``check`` reads every record of every partition (size, CRC, id sequence,
MSG boundaries) and every index entry, and prints what it found with
positions, like ``redis-check-aof`` and ``kafka-dump-log --verify``. It exits
0 only when the log is sound, 1 on problems, 2 when the directory is missing
or not a logd data directory (a lock, meta or partition file), unless
``--allow-empty`` accepts one with no log yet. It reports the ``meta`` file
(an unusable one is a problem; a missing one is not: the server adopts the
directory) and holds the writer lock while it runs, so a server cannot start
under it; a live server's lock is reported by its holder's pid. ``--fix``
does the two repairs that lose nothing acknowledged: it cuts a torn tail of
the last partition (after copying the bytes aside to ``<partition>.trunc.N``)
and rebuilds indexes. It never removes data from the middle of the log, and
never writes the ``meta`` file.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .log.index import SparseIndex
from .log.lock import LOCK_FILE, DirectoryLocked, WriterLock
from .log.meta import META_FILE, MetaError, load as load_meta
from .log.partition import id_at, parse_name
from .log.recovery import Corrupt, verify_partition
from .record import RecordError, parse

__all__ = ["register", "check", "dump"]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2


def is_data_dir(directory: str) -> bool:
    """A logd data directory has a lock file (every server that opened it made
    one), a meta file or partition files."""
    names = os.listdir(directory)
    return LOCK_FILE in names or META_FILE in names or any(parse_name(n) for n in names)


def check(directory: str, fix: bool = False, out: Any = sys.stdout, allow_empty: bool = False) -> int:
    def say(text: str) -> None:
        print(text, file=out)

    if not os.path.isdir(directory):
        say(f"{directory}: not a directory")
        return EXIT_USAGE
    if not is_data_dir(directory):
        # Issue 7 item 16: a mistyped path must not pass as "an empty log".
        if allow_empty:
            say(f"{directory}: no partitions (an empty log; --allow-empty)")
            return EXIT_OK
        say(f"{directory}: not a logd data directory (no partitions, no lock file); "
            "--allow-empty accepts a directory with no log yet")
        return EXIT_USAGE
    lock: WriterLock | None = None
    try:
        lock = WriterLock.acquire(directory, "logd check --fix" if fix else "logd check")
    except DirectoryLocked as exc:
        if fix:
            say(f"{directory}: in use by {exc.holder.describe()}; stop it before --fix")
            return EXIT_USAGE
        say(f"{directory}: in use by {exc.holder.describe()}; the last MSG may be mid-write")
    try:
        meta_ok = _check_meta(directory, say)
        code = _check(directory, fix, say)
        if not meta_ok:
            say(f"{directory}: {META_FILE} unusable (see above): logd serve will not open it")
            return EXIT_PROBLEMS
        return code
    finally:
        if lock is not None:
            lock.release()


def _check_meta(directory: str, say: Any) -> bool:
    try:
        meta = load_meta(directory)
    except MetaError as exc:
        say(str(exc))
        return False
    if meta is None:
        say(f"{META_FILE}: none yet (a directory from before logd had one; the server adopts it)")
    else:
        say(f"{META_FILE}: format {meta.format}, history {meta.history}, role {meta.role}, "
            f"created {meta.created}")
    return True


def _check(directory: str, fix: bool, say: Any) -> int:
    found = sorted((parsed, name) for name in os.listdir(directory) if (parsed := parse_name(name)))
    if not found:
        say(f"{directory}: no partitions (an empty log)")
        return EXIT_OK
    problems = 0
    prev: tuple[int, int] | None = None  # (number, last id)
    total = 0
    for i, ((number, first_id), name) in enumerate(found):
        path = os.path.join(directory, name)
        last = i == len(found) - 1
        if prev is not None and (number != prev[0] + 1 or first_id != prev[1] + 1):
            say(f"{name}: does not follow partition {prev[0]} (which ends at id {prev[1]})")
            problems += 1
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            index = SparseIndex(4096)

            def on_corrupt(bad: Corrupt, reason: str) -> None:
                say(f"{name}: offset {bad.start}: id {bad.first}: {reason} "
                    "(corrupt; valid records follow; not fixable without losing data)")

            checked = verify_partition(fd, path, number, size, index, 0, first_id,
                                     repair=last and fix, on_corrupt=on_corrupt)
            problems += len(checked.corrupt)
            end_id = checked.last_id
            if checked.damage is not None:
                at = checked.damage_at[0]
                if checked.cut is not None:
                    dropped, aside = checked.cut
                    say(f"{name}: offset {at}: {checked.damage}: cut {dropped} bytes "
                        f"(saved aside as {os.path.basename(aside)})")
                elif last:
                    say(f"{name}: offset {at}: {checked.damage}: torn tail of {size - at} bytes "
                        "(--fix cuts it)")
                    problems += 1
                else:
                    say(f"{name}: offset {at}: {checked.damage} (sealed partition damaged)")
                    problems += 1
            size = checked.size
            problems += _check_index(fd, name, path[:-4] + ".idx", first_id, size, index, fix, say)
        finally:
            os.close(fd)
        count = end_id - first_id + 1
        say(f"{name}: ids {first_id}..{end_id} ({count} records, {size} bytes)")
        total += count
        prev = (number, end_id)
    verdict = "sound" if not problems else f"{problems} problem(s)"
    say(f"{directory}: {len(found)} partition(s), {total} records: {verdict}")
    return EXIT_OK if not problems else EXIT_PROBLEMS


def _check_index(fd: int, name: str, idx_path: str, first_id: int, size: int,
                 rebuilt: SparseIndex, fix: bool, say: Any) -> int:
    loaded = SparseIndex.load(idx_path, 4096)
    if loaded is None:
        problem = "missing or not whole entries" if os.path.exists(idx_path) or size else None
    else:
        problem = loaded.sane(first_id, size, lambda o: id_at(fd, o))
        if problem is None:
            for entry_id, offset in zip(loaded.ids, loaded.offsets):
                if id_at(fd, offset) != entry_id:
                    problem = f"entry for id {entry_id} points at offset {offset}, not at its record"
                    break
    if problem is None:
        return 0
    if fix:
        rebuilt.save(idx_path)
        say(f"{name}: index {problem}: rebuilt")
        return 0
    say(f"{name}: index {problem} (--fix rebuilds it; the server does on start)")
    return 1


def dump(path: str, out: Any = sys.stdout) -> int:
    """Print each record with its offset; exit 1 at the first bad one.

    A closed pipe (``logd dump X.log | head``) ends it quietly with status 1:
    not every record was printed.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        print(f"logd dump: {path}: is a directory; give a partition file "
              "(NNNNNNNNNN-<first id>.log), or run `logd check` on the directory", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"logd dump: {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _dump(data, out)
    except BrokenPipeError:
        # Python would print a traceback at exit flushing stdout again: point it
        # at /dev/null first (the Python docs' recipe for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_PROBLEMS


def _dump(data: bytes, out: Any) -> int:
    pos = 0
    while pos < len(data):
        try:
            got = parse(data, pos)
        except RecordError as exc:
            print(f"offset={pos} BAD {exc.reason}", file=out)
            return EXIT_PROBLEMS
        if got is None:
            print(f"offset={pos} TORN {len(data) - pos} bytes of an incomplete record", file=out)
            return EXIT_PROBLEMS
        rec, nxt = got
        preview = repr(rec.body[:60]) + ("..." if len(rec.body) > 60 else "")
        print(f"offset={pos} id={rec.id} len={len(rec.body)} more={rec.more} crc=ok body={preview}",
              file=out)
        pos = nxt
    out.flush()
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="verify a data directory offline",
                       description="Verify every record and index of a data directory.")
    p.add_argument("directory")
    p.add_argument("--fix", action="store_true",
                   help="cut a torn tail (saved aside) and rebuild bad indexes")
    p.add_argument("--allow-empty", action="store_true",
                   help="exit 0 for a directory that holds no log yet (else: exit 2)")
    p.set_defaults(func=lambda a: check(a.directory, a.fix, allow_empty=a.allow_empty))
    d = sub.add_parser("dump", help="print the records of a partition file (or of a quarantine-*.log "
                       "file: a follower's divergent records, docs/storage.rst)")
    d.add_argument("partition")
    d.set_defaults(func=lambda a: dump(a.partition))

