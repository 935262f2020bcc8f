"""Reconnect backoff: how long to wait before the next attempt, as a pure function.

Capped exponential backoff with "equal jitter" (the shape of redis-py's
``backoff.py`` ``EqualJitterBackoff``): after ``failures`` failed attempts
the delay is in ``[d/2, d]`` with ``d = min(cap, base * 2**failures)``. Half
of it is fixed, so no attempt retries at once; the other half is random, so
a crowd of clients that lost the same server spreads out instead of
reconnecting in lockstep.

Nothing here sleeps, reads a clock or touches a socket: callers (the client's
``connect(wait=)`` and ``follow(reconnect=True)``, the follower next) do the
waiting, and tests pass ``rand`` to pin the jitter.
"""

from __future__ import annotations

import random
from typing import Callable

__all__ = ["MAX_EXPONENT", "delay"]

# 2**32 * any sane base is far beyond any cap; bounding the exponent keeps a
# long outage (failures in the millions) from building a huge integer.
MAX_EXPONENT = 32


def delay(
    failures: int,
    base: float = 0.05,
    cap: float = 5.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures (0: the first retry).

    ``rand`` returns a number in [0, 1] (``random.random`` by default).

    Raises:
        ValueError: ``failures`` is negative, or ``base`` or ``cap`` is not positive.
    """
    if failures < 0:
        raise ValueError(f"failures must be >= 0, not {failures}")
    if not (base > 0 and cap > 0):
        raise ValueError(f"base and cap must be positive, not {base} and {cap}")
    d: float = min(cap, base * float(2 ** min(failures, MAX_EXPONENT)))
    return d / 2 + rand() * (d / 2)
