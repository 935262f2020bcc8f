"""The two small files that let a restart skip re-verifying the log.

After Kafka's ``recovery-point-offset-checkpoint`` and its clean-shutdown
file. Both are written atomically (``fsutil.atomic_write``: ``<name>.tmp``,
fsync, ``rename``, fsync of the directory), so a reader finds the old
contents or the new, never a mix. Both are optional: a directory without
them (written by an older logd) opens with full verification. The partition files stay the truth; these
only say how much of them was already verified and made durable.

``recovery-point``, one line, updated after an fsync at most once a second
and once at every open::

    logd-recovery-point 1 partition=<number> offset=<bytes> id=<last id>

Every partition before ``<number>``, and ``<number>`` up to ``<offset>``
(the end of record ``<id>``, a MSG boundary), was fsynced. After a crash
only what follows is verified record by record.

``clean-shutdown``, JSON, written by a clean stop and removed by the next
open::

    {"format": 2, "head": H, "time": T,
     "partitions": [[number, first_id, last_id, size, last_record_offset], ...]}

After a clean stop each partition is trusted if its size and its last
record (id, CRC, end of MSG, end of file) agree with its entry. The first
format, one line ``head=H time=T``, says nothing per partition: it means
"verify everything", as logd did then.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from ..fsutil import atomic_write

__all__ = ["CLEAN_MARKER", "RECOVERY_POINT", "RecoveryPoint", "CleanEntry", "read_clean",
           "write_clean", "read_recovery_point", "write_recovery_point"]

CLEAN_MARKER = "clean-shutdown"
RECOVERY_POINT = "recovery-point"
_RP = re.compile(r"logd-recovery-point 1 partition=(\d+) offset=(\d+) id=(\d+)\n")


@dataclass(frozen=True, slots=True)
class RecoveryPoint:
    partition: int
    offset: int
    id: int  # the last id at ``offset``


@dataclass(frozen=True, slots=True)
class CleanEntry:
    number: int
    first_id: int
    last_id: int
    size: int
    last_offset: int  # start of the last record; -1 when empty


def write_recovery_point(directory: str, rp: RecoveryPoint) -> None:
    text = f"logd-recovery-point 1 partition={rp.partition} offset={rp.offset} id={rp.id}\n"
    atomic_write(os.path.join(directory, RECOVERY_POINT), text.encode())


def read_recovery_point(directory: str) -> RecoveryPoint | None | str:
    """The recovery point; None if there is none; a str saying why it is unusable."""
    try:
        with open(os.path.join(directory, RECOVERY_POINT), "rb") as f:
            data = f.read(256)
    except FileNotFoundError:
        return None
    m = _RP.fullmatch(data.decode("ascii", "replace"))
    if not m:
        return "not a recovery point line"
    return RecoveryPoint(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def write_clean(directory: str, head: int, when: float, entries: list[CleanEntry]) -> None:
    doc = {"format": 2, "head": head, "time": round(when, 3),
           "partitions": [[e.number, e.first_id, e.last_id, e.size, e.last_offset] for e in entries]}
    data = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    atomic_write(os.path.join(directory, CLEAN_MARKER), data)


def read_clean(directory: str) -> dict[int, CleanEntry] | None | str:
    """Entries by partition number; None if there is no marker; a str if it
    exists but cannot be used (an older format, or damaged)."""
    try:
        with open(os.path.join(directory, CLEAN_MARKER), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != 2:
            return "an older format with no per-partition sizes"
        out = {}
        for row in doc["partitions"]:
            entry = CleanEntry(*(int(v) for v in row))
            out[entry.number] = entry
        return out
    except (ValueError, TypeError, KeyError):
        return "an older format with no per-partition sizes"
