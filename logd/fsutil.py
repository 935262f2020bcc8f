"""Writing a small file whole, and making a directory entry durable.

Every small file logd keeps beside its data (``meta``, ``recovery-point``,
``clean-shutdown``, a consumer's cursor file, a partition's ``.idx``) is
replaced, never edited in place: write ``<name>.tmp`` in the same directory,
fsync it, ``rename`` it over ``<name>``, fsync the directory. A reader, or
the next start after a crash, finds the old contents or the new, never a
mix or an empty file. The tmp file must be in the same directory: rename is
atomic only within one file system. The directory fsync makes the rename
itself durable (ext4 and xfs do not promise that without it).

A failed write removes its tmp file and raises the ``OSError``; the old file
is untouched. A crash can still leave ``<name>.tmp`` behind: the next write
truncates it, and readers never look at it.
"""

from __future__ import annotations

import errno
import os

__all__ = ["atomic_write", "fsync_dir", "read_small"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so that entries created, renamed or removed in it survive a crash.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` whole: tmp, write, fsync, rename, fsync the directory.

    ``durable=False`` keeps the tmp + rename (never a torn file) but skips both
    fsyncs: for caches such as an ``.idx``, which are rebuilt if lost.

    Raises:
        OSError: nothing was replaced (or, from the final directory fsync, the
            rename may not survive a crash).
    """
    path = os.fspath(path)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def read_small(path: str | os.PathLike[str], limit: int) -> bytes | None:
    """A small file's bytes, whole; None if it does not exist. Never reads more
    than ``limit`` + 1 bytes: a stray huge file is refused, not slurped.

    Raises:
        OSError: it cannot be read, or is larger than ``limit`` bytes (EFBIG).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        return None
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes")
    return data


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
