"""A consumer's cursor file, with journalctl ``--cursor-file`` semantics.

The file holds the id of the last record the consumer has *finished*
processing, as decimal text and a newline. A consumer starts at
``next_id()`` (saved id + 1) and calls ``save(id)`` after processing each
record, so a crash re-delivers at most the records since the last write to
disk: at-least-once, never a skipped id.

Saves are atomic (``fsutil.atomic_write``): write ``<path>.tmp``, fsync it,
``os.replace`` it over the file, fsync the directory. A crash leaves the old
cursor or the new one, never an empty or partial file (the nats-server#5876
kind of loss).

Writing and fsyncing every record would cost a disk round trip each, so
writes are batched: at most every ``every`` saves or ``interval`` seconds,
whichever comes first. Time is only checked when ``save()`` is called, so a
consumer blocked waiting for records keeps its last id pending until the
next record, ``flush()`` or exit (the context manager flushes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from .fsutil import atomic_write

__all__ = ["Checkpoint", "CheckpointError"]


class CheckpointError(ValueError):
    """The cursor file exists but does not hold an id.

    Raised instead of falling back to a default: starting over could
    reprocess everything, and starting at the end would skip records.
    """


class Checkpoint:
    """A cursor file; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        every: int = 1000,
        interval: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.path = Path(path)
        self.every = every
        self.interval = interval
        self._clock = clock
        self._saved: int | None = self.load()  # what is on disk
        self._pending: int | None = None  # saved in memory, not yet on disk
        self._unsaved = 0
        self._last_write = clock()

    def load(self) -> int | None:
        """The id on disk, or None if there is no cursor file yet.

        Raises:
            CheckpointError: the file holds something other than an id.
        """
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            # Fail now, not at the first save after records were handed out.
            if not self.path.parent.is_dir():
                raise CheckpointError(
                    f"cursor file {self.path}: directory {self.path.parent} does not exist"
                ) from None
            return None
        except IsADirectoryError:
            raise CheckpointError(f"cursor file {self.path} is a directory") from None
        except OSError as exc:
            raise CheckpointError(f"cursor file {self.path}: {exc.strerror or exc}") from None
        raw = text.strip()
        if not raw.isdigit():
            raise CheckpointError(f"cursor file {self.path} does not hold an id: {text[:40]!r}")
        return int(raw)

    @property
    def last_id(self) -> int | None:
        """The last id saved (possibly still pending), or None."""
        return self._pending if self._pending is not None else self._saved

    def next_id(self, default: int = 1) -> int:
        """Where to start reading: the saved id + 1, or ``default`` without a cursor."""
        last = self.last_id
        return default if last is None else last + 1

    def save(self, id: int) -> None:
        """Record that ``id`` has been processed; writes to disk when a batch is due."""
        self._pending = id
        self._unsaved += 1
        if self._unsaved >= self.every or self._clock() - self._last_write >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Write the pending id to disk now (no-op if nothing is pending)."""
        if self._pending is None:
            return
        try:
            atomic_write(self.path, b"%d\n" % self._pending)
        except OSError as exc:
            raise CheckpointError(f"cannot save cursor file {self.path}: {exc.strerror or exc}") from exc
        self._saved = self._pending
        self._pending = None
        self._unsaved = 0
        self._last_write = self._clock()

    def restore(self, id: int | None) -> None:
        """Put the file back to ``id`` (None: no file), dropping anything pending.

        For a consumer that turned out not to have taken what was saved
        (``logd read`` after EPIPE): going back re-delivers, never skips.
        """
        self._pending = None
        self._unsaved = 0
        if id is None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self._saved = None
        elif id != self._saved:
            self._pending = id
            self.flush()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        # Flush on errors too: every id passed to save() was fully processed.
        self.flush()

    def __repr__(self) -> str:
        return f"<Checkpoint {str(self.path)!r} last_id={self.last_id}>"

