"""The catch-up's progress, as numbers and as one line: pure, no clock or I/O.

The follower (process.py) samples what it has copied since the session began
and the primary's head as last heard (its hello, then ``+HEAD``); on a
terminal it redraws one line, off one it logs ``catchup_progress`` with
these same fields every ``--progress-interval`` seconds.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fields", "line"]


def fields(copied_bytes: int, copied_ids: int, elapsed: float, at_id: int, head: int) -> dict[str, Any]:
    """What the progress says: totals, rates, and the ETA to ``head`` (None
    while nothing has been copied yet: no rate to go by)."""
    elapsed = max(elapsed, 1e-9)
    ids_rate = copied_ids / elapsed
    left = max(0, head - at_id)
    eta = left / ids_rate if ids_rate > 0 else None
    return {"bytes": copied_bytes, "ids": copied_ids, "bytes_per_second": round(copied_bytes / elapsed),
            "ids_per_second": round(ids_rate), "id": at_id, "primary_head": head,
            "ids_left": left, "eta_seconds": None if eta is None else round(eta, 1)}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA ?"
    s = int(round(seconds))
    return f"ETA {s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"ETA {s // 60}:{s % 60:02d}"


def line(f: dict[str, Any]) -> str:
    """The one terminal line, e.g. ``catching up: 12.5 MB, 120000 ids copied
    (1.2 MB/s, 12000 ids/s), at id 120000 of 500000, ETA 0:31``."""
    return (f"catching up: {_size(f['bytes'])}, {f['ids']} ids copied "
            f"({_size(f['bytes_per_second'])}/s, {f['ids_per_second']} ids/s), "
            f"at id {f['id']} of {f['primary_head']}, {_eta(f['eta_seconds'])}")
