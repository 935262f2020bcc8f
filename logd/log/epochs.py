"""Epoch histories compared: where two copies of one log part (issue 10).

A history is the meta file's ``epochs``: ``((epoch, first id), ...)``. The
epoch of id ``x`` is that of the last pair whose first id is ``<= x``. Two
copies agree on a record when their histories give it the same epoch; they
*part* at the first id where the epochs differ (Kafka's leader-epoch rule:
for the follower's epoch E, the primary's E ends where its next epoch
begins; a follower holding ids past that end holds records the primary
never had). Since both sides are piecewise constant, it is enough to look at
the ids where either history begins an epoch. Two ACCEPTs of the same epoch
number at different ids part too. Pure: no files, no sockets.
"""

from __future__ import annotations

import re

__all__ = ["Epochs", "epoch_of", "divergence", "diverged_message", "parse_point"]

Epochs = tuple[tuple[int, int], ...]

_POINT = re.compile(r"the histories part at epoch (\d{1,19}) id (\d{1,19})")


def epoch_of(epochs: Epochs, id: int) -> int:
    """The epoch ``id`` belongs to (0: before every epoch, or no history)."""
    found = 0
    for epoch, first in epochs:
        if first > id:
            break
        found = epoch
    return found


def divergence(ours: Epochs, theirs: Epochs, last_id: int) -> int | None:
    """The first id ``<= last_id`` whose epoch differs between the two
    histories, or None (they agree on ids 1..last_id, or one is unknown)."""
    if not ours or not theirs:
        return None
    for x in sorted({1, *(f for _, f in ours), *(f for _, f in theirs)}):
        if x > last_id:
            break
        if epoch_of(ours, x) != epoch_of(theirs, x):
            return x
    return None


def diverged_message(ours: Epochs, theirs: Epochs, point: int, last_id: int) -> str:
    """Why a copy (``ours``, ids up to ``last_id``) cannot follow ``theirs``:
    the words ``parse_point`` finds, then the two epochs of record ``point``."""
    mine, other = epoch_of(ours, point), epoch_of(theirs, point)
    return (f"the histories part at epoch {mine} id {point}: the follower's ids {point}..{last_id} are "
            f"of its epoch {mine}, the primary's id {point} of its epoch {other}; the follower's "
            f"are not the primary's (logd-follower --quarantine-diverged moves them aside)")


def parse_point(message: str) -> tuple[int, int] | None:
    """``(epoch, id)`` from a ``diverged_message``; None for another divergence."""
    m = _POINT.search(message)
    return (int(m.group(1)), int(m.group(2))) if m else None
