"""Fault injection for tests only: off unless ``LOGD_FAULTS`` is set.

``LOGD_FAULTS=fsync_fail_after=N`` makes every fsync after the N-th raise
EIO, to test that a failed fsync stops writes for good (fsyncgate).

``LOGD_FAULTS=fsync_wedge=PATH`` makes every fsync wait while ``PATH``
exists (polling every 10 ms, in the thread the fsync runs in), to
test that the watchdog stops its pings while the writer is wedged.

``LOGD_FAULTS=progress_every=SECONDS`` shortens the 2 s between recovery's
progress points (``verifying`` lines, ``EXTEND_TIMEOUT_USEC=``), so a test
sees several of them from a small data directory. Not a fault; test-only too.

Several are joined with commas.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Callable

__all__ = ["fsync_func", "progress_every"]


def _settings() -> dict[str, str]:
    raw = os.environ.get("LOGD_FAULTS", "")
    return dict(item.split("=", 1) for item in raw.split(",") if "=" in item)


def progress_every() -> float | None:
    """The test's progress interval, or None for the log's own."""
    value = _settings().get("progress_every")
    return float(value) if value is not None else None


def fsync_func() -> Callable[[int], None]:
    wedge = _settings().get("fsync_wedge")
    if wedge is not None:
        def wedged_fdatasync(fd: int) -> None:
            while os.path.exists(wedge):
                time.sleep(0.01)
            os.fdatasync(fd)

        return wedged_fdatasync
    limit = _settings().get("fsync_fail_after")
    if limit is None:
        return os.fdatasync
    calls = [0]

    def failing_fdatasync(fd: int) -> None:
        calls[0] += 1
        if calls[0] > int(limit):
            raise OSError(errno.EIO, "injected fsync failure (LOGD_FAULTS)")
        os.fdatasync(fd)

    return failing_fdatasync
