"""The follower's status file: ``follower.status``, in the data directory it writes.

The follower (``logd-follower``) says here what it is doing, for a person
(``cat``, ``jq``) and for the read replica serving the same directory
(``logd serve --refuse``), which shows it in STATS and names the primary in
its ``ERR REFUSED`` replies. One line of JSON::

    {"format": 1, "pid": 4242, "primary": "10.0.0.5:1774", "link": "streaming",
     "reason": "", "written": [3, 1048576, 51234], "fsynced": [3, 1040000, 51200],
     "primary_head": 51240, "updated": 1764628200.125}

Fields (docs/server.rst, "Read replicas", is the reference):

``format``   1.
``pid``      the follower's process id.
``primary``  the address it replicates from, as given (``host:port``).
``link``     ``connecting``, ``catching_up``, ``streaming`` or ``stopped``.
``reason``   why it is stopped, or what it waits for; ``""`` when nothing.
``written``  ``[partition, offset, id]``: the end of what it has written
             (offset just past the last record; id of that record, 0 if none).
``fsynced``  the same, for what it has fsynced.
``primary_head``  the primary's head as last seen, or ``null``.
``updated``  Unix time of this write, a float.

The follower replaces the file whole (``fsutil.atomic_write`` with
``durable=False``: tmp + rename, so never a torn file; no fsync, since the
contents only matter while the follower runs) when the link state changes,
otherwise at most once a second, and at least every ``HEARTBEAT`` seconds
while it runs, so a reader can tell a follower that died: ``updated``
older than ``STALE`` seconds.

Readers are lenient where the meta file (``meta.py``) is strict: the file is
a hint, not the truth of the log. Unknown keys are ignored (a newer
follower may add some); a missing known key reads as unknown. A file that
is not a JSON object is ``StatusError``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import StorageError
from ..fsutil import atomic_write, read_small

__all__ = ["STATUS_FILE", "FORMAT", "LINKS", "HEARTBEAT", "STALE", "Position", "FollowerStatus",
           "StatusError", "encode", "decode", "load", "save"]

STATUS_FILE = "follower.status"
FORMAT = 1
LINKS = ("connecting", "catching_up", "streaming", "stopped")
HEARTBEAT = 5.0  # seconds: the follower rewrites the file at least this often
STALE = 3 * HEARTBEAT  # seconds: an older file names a follower that is not running
_MAX_SIZE = 64 * 1024

Position = tuple[int, int, int]  # (partition, offset, id)


class StatusError(StorageError):
    """``follower.status`` exists but is not a status file."""


@dataclass(frozen=True, slots=True)
class FollowerStatus:
    primary: str | None = None
    link: str = "unknown"
    reason: str = ""
    written: Position | None = None
    fsynced: Position | None = None
    primary_head: int | None = None
    updated: float = 0.0
    pid: int = 0

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.updated)


def encode(status: FollowerStatus) -> bytes:
    doc = {"format": FORMAT, "pid": status.pid, "primary": status.primary, "link": status.link,
           "reason": status.reason,
           "written": list(status.written) if status.written else None,
           "fsynced": list(status.fsynced) if status.fsynced else None,
           "primary_head": status.primary_head, "updated": status.updated}
    return json.dumps(doc).encode() + b"\n"


def decode(data: bytes) -> FollowerStatus:
    """Parse a status file's bytes; unknown keys are ignored, bad values read as unknown.

    Raises:
        StatusError: not a JSON object, or a format this logd does not know.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise StatusError(f"{STATUS_FILE} is not JSON") from None
    if not isinstance(doc, dict):
        raise StatusError(f"{STATUS_FILE} is not a JSON object")
    if doc.get("format") != FORMAT:
        raise StatusError(f"{STATUS_FILE} has format {doc.get('format')!r}, this logd reads {FORMAT}")
    primary = doc.get("primary")
    link = doc.get("link")
    return FollowerStatus(
        primary=primary if isinstance(primary, str) and primary else None,
        link=link if link in LINKS else "unknown",
        reason=str(doc.get("reason") or ""),
        written=_position(doc.get("written")),
        fsynced=_position(doc.get("fsynced")),
        primary_head=_count(doc.get("primary_head")),
        updated=float(doc["updated"]) if _number(doc.get("updated")) else 0.0,
        pid=_count(doc.get("pid")) or 0,
    )


def load(directory: str) -> FollowerStatus | None:
    """The status in ``directory``, or None if there is no such file. Reads only.

    Raises:
        StatusError: the file exists but cannot be read or parsed.
    """
    path = os.path.join(directory, STATUS_FILE)
    try:
        data = read_small(path, _MAX_SIZE)
    except OSError as exc:
        raise StatusError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return None if data is None else decode(data)


def save(directory: str, status: FollowerStatus) -> None:
    """Replace the file whole (the follower's side). No fsync: see the module docstring.

    Raises:
        OSError: not written; the old file is untouched.
    """
    atomic_write(os.path.join(directory, STATUS_FILE), encode(status), durable=False)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _position(value: Any) -> Position | None:
    if isinstance(value, list) and len(value) == 3 and all(_count(v) is not None for v in value):
        return (value[0], value[1], value[2])
    return None
