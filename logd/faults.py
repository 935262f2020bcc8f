"""Fault injection for tests only: off unless ``LOGD_FAULTS`` is set.

``LOGD_FAULTS=fsync_fail_after=N`` makes every fsync after the N-th raise
EIO, to test that a failed fsync stops writes for good (fsyncgate).
"""

from __future__ import annotations

import errno
import os
from typing import Callable

__all__ = ["fsync_func"]


def _settings() -> dict[str, str]:
    raw = os.environ.get("LOGD_FAULTS", "")
    return dict(item.split("=", 1) for item in raw.split(",") if "=" in item)


def fsync_func() -> Callable[[int], None]:
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
