"""The data directory's identity: the ``meta`` file.

One line of JSON, so an operator can read it with ``cat`` (and ``jq``)::

    {"format": 1, "history": "1b4e28ba-2fa1-4d2a-883f-0016d3cca427",
     "created": "2026-12-01T22:30:00Z", "role": "primary", "epochs": [[1, 1]]}

(written on one line). Fields:

``format``
    The version of this file and of the directory layout it describes; 1.
    A logd that meets a format it does not know refuses to open the
    directory: it was written by a newer logd.
``history``
    A UUID4 made when the log was created (or when a directory from before
    this file existed was first opened by a writer). Two directories with
    the same history hold copies of the same log; a follower compares it
    with its leader's before it appends anything.
``created``
    When the history was made, UTC, ISO 8601, whole seconds.
``role``
    ``primary``; ``replica`` (a follower's copy, written by logd-follower);
    ``refusing`` (a primary told to REFUSE, or that saw a higher epoch: it
    takes no writes, and comes back refusing after any restart, until an
    ACCEPT). A logd older than issue 10 refuses to open a ``refusing``
    directory, which is the safe outcome.
``epochs``
    ``[[epoch, first id], ...]``: the id each epoch's first record got, as
    Kafka's leader-epoch checkpoint. One epoch, from id 1, until failover
    adds more; each ACCEPT appends ``[last epoch + 1, next id]``. An epoch
    in which nothing was written has the same first id as the next one.
``primary`` (optional)
    Only with ``role: refusing``: the new primary the REFUSE named
    (``host:port``), so that refusals after a restart still name it.
``followers`` (optional)
    ``["host:port", ...]``: the addresses the followers this server served
    advertised (``logd-follower --advertise``: the read replica over each
    copy), newest last, at most ``MAX_FOLLOWERS``. A primary restarting
    after an unclean stop asks them for their epoch first (daemon.py).

Why JSON and not msgpack (the wire's encoding): the file is tiny, read once
per open, and read by people (``cat``, backups, support tickets) more often
than by programs; ``clean-shutdown`` is JSON for the same reason.

Written atomically (``fsutil.atomic_write``: tmp, fsync, rename, fsync the
directory), only by the process holding the writer lock. A directory without
the file (every directory written before issue 8) is adopted by the first
writer that opens it: ``adopt`` makes a new history and writes it. A
read-only open uses ``load`` and copes with ``None`` (history unknown).

A file that exists but is not a whole format-1 file is never replaced
silently, because it is the only record of which history the partitions
belong to: the open fails with ``MetaError``, naming the file. Moving it
away on purpose makes the next writer adopt the directory as a new history.
Keys other than the five (and ``primary``, ``followers``) are refused too: they can only come from a newer
format, and rewriting the file without them could drop an epoch fence.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog

from ..errors import StorageError
from ..fsutil import atomic_write, read_small

__all__ = ["META_FILE", "FORMAT", "ROLES", "Meta", "MetaError", "new", "load", "adopt", "save",
           "encode", "decode", "with_role", "with_epoch", "with_follower", "parse_epochs",
           "MAX_FOLLOWERS"]

log = structlog.get_logger("logd.log")

META_FILE = "meta"
FORMAT = 1
ROLES = ("primary", "replica", "refusing")
_KEYS = ("format", "history", "created", "role", "epochs")
_OPTIONAL = ("primary", "followers")
MAX_FOLLOWERS = 16  # advertised follower addresses kept; the oldest goes first
_MAX_SIZE = 64 * 1024  # a sane meta file is ~150 bytes; do not read a stray huge file whole


class MetaError(StorageError):
    """The ``meta`` file exists but cannot be used. Names the file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"metadata file {path}: {reason}; logd never replaces it on its own: restore it, "
            "or move it away to adopt the directory as a new history"
        )
        self.path = path
        self.problem = reason


@dataclass(frozen=True, slots=True)
class Meta:
    format: int
    history: str  # a UUID, canonical lower-case form
    created: str  # UTC, "YYYY-MM-DDTHH:MM:SSZ"
    role: str  # one of ROLES
    epochs: tuple[tuple[int, int], ...]  # (epoch, first id), increasing
    primary: str = ""  # role "refusing": the new primary its REFUSE named, if any
    followers: tuple[str, ...] = ()  # followers' advertised addresses, newest last

    @property
    def epoch(self) -> int:
        """The current (last) epoch."""
        return self.epochs[-1][0]


def with_role(meta: Meta, role: str, primary: str = "") -> Meta:
    """``meta`` with another role (and, refusing, the new primary's address)."""
    return Meta(meta.format, meta.history, meta.created, role, meta.epochs,
                primary if role == "refusing" else "", meta.followers)


def with_epoch(meta: Meta, first_id: int) -> Meta:
    """``meta`` as a primary in a new epoch (last + 1) whose first record is ``first_id``."""
    return Meta(meta.format, meta.history, meta.created, "primary",
                (*meta.epochs, (meta.epoch + 1, first_id)), followers=meta.followers)


def with_follower(meta: Meta, address: str) -> Meta:
    """``meta`` remembering a follower's advertised ``address`` (moved to the end
    if known; the oldest dropped past ``MAX_FOLLOWERS``)."""
    kept = tuple(a for a in meta.followers if a != address) + (address,)
    return Meta(meta.format, meta.history, meta.created, meta.role, meta.epochs, meta.primary,
                kept[-MAX_FOLLOWERS:])


def new(now: datetime | None = None, history: str | None = None, role: str = "primary") -> Meta:
    """A fresh identity: format 1, a new UUID4 history (or ``history``: a
    follower adopting its primary's), ``role``, epoch 1 from id 1."""
    now = now or datetime.now(timezone.utc)
    created = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Meta(FORMAT, history or str(uuid.uuid4()), created, role, ((1, 1),))


def encode(meta: Meta) -> bytes:
    """The file's bytes: one JSON object and a newline, keys in documented order."""
    doc = {"format": meta.format, "history": meta.history, "created": meta.created,
           "role": meta.role, "epochs": [list(e) for e in meta.epochs]}
    if meta.primary:
        doc["primary"] = meta.primary
    if meta.followers:
        doc["followers"] = list(meta.followers)
    return json.dumps(doc).encode() + b"\n"


def decode(data: bytes, path: str = META_FILE) -> Meta:
    """Parse and check a meta file's bytes.

    Raises:
        MetaError: not a whole format-1 meta file (the reason says what is wrong).
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MetaError(path, "not JSON" if data.strip() else "empty") from None
    if not isinstance(doc, dict):
        raise MetaError(path, "not a JSON object")
    fmt = doc.get("format")
    if not _is_int(fmt):
        raise MetaError(path, "no format number")
    if fmt != FORMAT:
        raise MetaError(path, f"format {fmt!r}, but this logd reads only format {FORMAT} "
                              "(written by a newer logd?)")
    missing = [k for k in _KEYS if k not in doc]
    extra = sorted(k for k in doc if k not in _KEYS and k not in _OPTIONAL)
    if missing or extra:
        raise MetaError(path, ", ".join([*(f"no {k!r}" for k in missing),
                                         *(f"unknown key {k!r}" for k in extra)]))
    return Meta(FORMAT, _history(doc["history"], path), _created(doc["created"], path),
                _role(doc["role"], path), _epochs(doc["epochs"], path), _primary(doc, path),
                _followers(doc, path))


def load(directory: str) -> Meta | None:
    """The directory's identity, or None if it has no meta file (an older logd's, or new).

    Reads only: safe for a read-only open.

    Raises:
        MetaError: the file exists but cannot be read or used.
    """
    path = os.path.join(directory, META_FILE)
    try:
        data = read_small(path, _MAX_SIZE)
    except OSError as exc:
        raise MetaError(path, exc.strerror or str(exc)) from exc
    return None if data is None else decode(data, path)


def save(directory: str, meta: Meta) -> None:
    """Replace the meta file atomically. Only the holder of the writer lock may call it.

    Raises:
        MetaError: ``meta`` would not load back (a bad role or epoch list).
        OSError: writing failed; the old file is untouched.
    """
    data = encode(meta)
    decode(data, os.path.join(directory, META_FILE))  # never write what we would refuse to read
    atomic_write(os.path.join(directory, META_FILE), data)


def adopt(directory: str) -> Meta:
    """The directory's identity, created and saved first if it has none.

    For the writer, under its lock: a directory from before issue 8 (or a new
    one) gets a new history here, once.

    Raises:
        MetaError: an existing file cannot be used (it is left alone).
        StorageError: a new file could not be written.
    """
    meta = load(directory)
    if meta is not None:
        return meta
    meta = new()
    path = os.path.join(directory, META_FILE)
    try:
        save(directory, meta)
    except OSError as exc:
        raise StorageError(f"cannot write metadata file {path}: {exc.strerror or exc}") from exc
    log.info("meta_created", file=path, history=meta.history, format=meta.format)
    return meta


# -- field checks -------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _history(value: Any, path: str) -> str:
    try:
        if isinstance(value, str) and str(uuid.UUID(value)) == value:
            return value
    except ValueError:
        pass
    raise MetaError(path, f"history {value!r} is not a UUID")


def _created(value: Any, path: str) -> str:
    try:
        if isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None:
            return value
    except ValueError:
        pass
    raise MetaError(path, f"created {value!r} is not an ISO 8601 UTC time")


def _role(value: Any, path: str) -> str:
    if value in ROLES:
        assert isinstance(value, str)
        return value
    raise MetaError(path, f"role {value!r} is not one of {', '.join(ROLES)}")


def _primary(doc: dict[str, Any], path: str) -> str:
    value = doc.get("primary", "")
    if not isinstance(value, str) or len(value) > 300:
        raise MetaError(path, f"primary {value!r} is not a host:port string")
    return value


def _followers(doc: dict[str, Any], path: str) -> tuple[str, ...]:
    value = doc.get("followers", [])
    if not (isinstance(value, list) and len(value) <= MAX_FOLLOWERS
            and all(isinstance(a, str) and 0 < len(a) <= 300 for a in value)):
        raise MetaError(path, f"followers {value!r:.80} is not a list of at most "
                              f"{MAX_FOLLOWERS} host:port strings")
    return tuple(value)


def parse_epochs(value: Any, allow_empty: bool = False) -> tuple[tuple[int, int], ...]:
    """``[[epoch, first id], ...]`` (JSON lists or msgpack arrays) as tuples: both
    >= 1, epochs increasing, first ids not decreasing. Also the replication
    hellos' ``epochs`` field (protocol/replication.py), where ``[]`` is allowed.

    Raises:
        ValueError: anything else.
    """
    bad = ValueError("epochs must be a non-empty list of [epoch, first id] pairs, "
                     "both >= 1 and increasing")
    if not isinstance(value, (list, tuple)) or not (value or allow_empty) or len(value) > 100_000:
        raise bad
    out: list[tuple[int, int]] = []
    for pair in value:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and all(_is_int(v) and 1 <= v < 2**63 for v in pair)):
            raise bad
        epoch, first = pair
        if out and (epoch <= out[-1][0] or first < out[-1][1]):
            raise bad
        out.append((epoch, first))
    return tuple(out)


def _epochs(value: Any, path: str) -> tuple[tuple[int, int], ...]:
    try:
        return parse_epochs(value)
    except ValueError as exc:
        raise MetaError(path, str(exc)) from None
