"""The logd error tree, and how each error looks on the wire.

Every error a client can see knows its own reply: ``kind`` is the reply word
(``ERR_CLIENT`` for a bad request, ``ERR`` for a server-side failure) and
``code`` is the first word of the reason, which the client maps back to a
class (see ``CLASSES``). The rest of the reason is for people.

This module imports nothing from logd and nothing with side effects.
"""

from __future__ import annotations

import re

__all__ = [
    "LogdError",
    "ClientError",
    "ProtocolError",
    "InvalidArgument",
    "UnknownCommand",
    "OutOfRange",
    "NotRetained",
    "Refused",
    "Forbidden",
    "Diverged",
    "ServerError",
    "StorageError",
    "DiskFull",
    "Locked",
    "FsyncFailed",
    "CorruptLogError",
    "ShuttingDown",
    "TooManyClients",
    "NotReplicated",
    "ConnectionLost",
    "BadAddress",
    "ChecksumError",
    "SequenceError",
    "from_reply",
]


class LogdError(Exception):
    """Base of every logd error."""

    kind = "ERR"
    code = "INTERNAL"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def reason(self) -> str:
        """The reason sent on the wire: the code, then the message."""
        return f"{self.code} {self.message}" if self.message else self.code


# -- bad requests: ERR_CLIENT -------------------------------------------------


class ClientError(LogdError):
    kind = "ERR_CLIENT"
    code = "BADREQUEST"


class ProtocolError(ClientError):
    """Framing is broken; the server replies, then closes the connection."""

    code = "PROTOCOL"


class InvalidArgument(ClientError):
    code = "BADREQUEST"


class UnknownCommand(ClientError):
    code = "UNKNOWN"


class OutOfRange(ClientError):
    """A start id past head+1. Carries the valid range."""

    code = "RANGE"

    def __init__(self, message: str = "", first: int = 0, head: int = 0) -> None:
        super().__init__(message)
        self.first = first
        self.head = head

    def reason(self) -> str:
        return f"{self.code} {self.message} (first={self.first} head={self.head})"


class NotRetained(OutOfRange):
    """A start id below the first retained id."""

    code = "NOTRETAINED"


class Refused(ClientError):
    """A write to a server that refuses writes (not the primary)."""

    code = "REFUSED"

    def __init__(self, message: str = "", primary: str | None = None) -> None:
        super().__init__(message)
        self.primary = primary

    def reason(self) -> str:
        tail = f" (primary={self.primary})" if self.primary else ""
        return f"{self.code} {self.message}{tail}"


class Forbidden(ClientError):
    """An admin command from a peer that may not send it."""

    code = "FORBIDDEN"


# -- server-side failures: ERR -------------------------------------------------


class Diverged(ClientError):
    """REPLICATE: the follower's copy is not a prefix of this log (another
    history, or ahead of it, or its last record differs). Names the point."""

    code = "DIVERGED"

    def __init__(self, message: str = "", partition: int = 0, offset: int = 0, id: int = 0) -> None:
        super().__init__(message)
        self.partition = partition
        self.offset = offset
        self.id = id

    def reason(self) -> str:
        return f"{self.code} {self.message} (partition={self.partition} offset={self.offset} id={self.id})"


class ServerError(LogdError):
    kind = "ERR"
    code = "INTERNAL"


class StorageError(ServerError):
    code = "STORAGE"


class DiskFull(StorageError):
    code = "DISKFULL"


class Locked(StorageError):
    """The data directory is held by another process (its writer lock): stop it first."""

    code = "LOCKED"


class FsyncFailed(StorageError):
    """An fsync failed. Writes stay stopped until restart (fsyncgate)."""

    code = "FSYNC"


class CorruptLogError(StorageError):
    """A record on disk fails its checks. Carries where it is."""

    code = "CORRUPT"

    def __init__(
        self, message: str = "", partition: int = 0, offset: int = 0, id: int = 0
    ) -> None:
        super().__init__(message)
        self.partition = partition
        self.offset = offset
        self.id = id


class ShuttingDown(ServerError):
    code = "SHUTDOWN"


class TooManyClients(ServerError):
    code = "MAXCLIENTS"


class NotReplicated(ServerError):
    """``--min-acks``: a MSG written on the primary that too few followers
    confirmed in time. It is not taken back; ``first``..``last`` are its ids."""

    code = "NOTREPLICATED"

    def __init__(self, message: str = "", first: int = 0, last: int = 0) -> None:
        super().__init__(message)
        self.first = first
        self.last = last


# -- client side only: never sent by a server ----------------------------------


class ConnectionLost(LogdError):
    code = "CONNECTION"


class BadAddress(LogdError, ValueError):
    """An address the client cannot parse (``host:abc``, a bare port, port 0).

    Also a ``ValueError``, so code written against the older client still
    catches it; the command line exits 2 (usage) for it.
    """

    code = "ADDRESS"


class ChecksumError(ProtocolError):
    """A record received fails its checksum."""

    code = "CHECKSUM"


class SequenceError(ProtocolError):
    """A record received does not carry the id that was due."""

    code = "SEQUENCE"


CLASSES: dict[str, type[LogdError]] = {
    cls.code: cls
    for cls in (
        ClientError,
        InvalidArgument,
        ProtocolError,
        UnknownCommand,
        OutOfRange,
        NotRetained,
        Refused,
        Forbidden,
        Diverged,
        ServerError,
        StorageError,
        DiskFull,
        Locked,
        FsyncFailed,
        CorruptLogError,
        ShuttingDown,
        TooManyClients,
        NotReplicated,
    )
}

_FIELD = re.compile(r"\b(first|head|primary)=(\S+?)\)?(?:\s|$)")


def from_reply(kind: str, reason: str) -> LogdError:
    """Rebuild the exception for an ``ERR``/``ERR_CLIENT`` reply line."""
    code, _, message = reason.partition(" ")
    default = ClientError if kind == "ERR_CLIENT" else ServerError
    cls = CLASSES.get(code, default)
    if cls is default and code not in CLASSES:
        message = reason
    fields = dict(_FIELD.findall(message))
    message = re.sub(r"\s*\((?:first|primary)=[^)]*\)$", "", message)
    if issubclass(cls, OutOfRange):
        # A server that sends these sends both, as ids; anything else is a
        # broken reply, not a bare ValueError (issue 7, item 9).
        ids = {k: fields.get(k, "") for k in ("first", "head")}
        bad = {k: v for k, v in ids.items() if not (v.isdigit() and v.isascii() and len(v) <= 19)}
        if bad:
            found = ", ".join(f"{k}={v!r}" if v else f"no {k}=" for k, v in bad.items())
            return ProtocolError(f"malformed {code} reply ({found}): {kind} {reason[:200]}")
        return cls(message, first=int(ids["first"]), head=int(ids["head"]))
    if cls is Refused:
        return Refused(message, primary=fields.get("primary"))
    if cls is NotReplicated:
        m = re.match(r"ids (\d{1,19})(?:-(\d{1,19}))? ", message)
        if m:
            return NotReplicated(message, int(m.group(1)), int(m.group(2) or m.group(1)))
    if cls is Diverged:
        m = re.search(r"\s*\(partition=(\d{1,19}) offset=(\d{1,19}) id=(\d{1,19})\)$", message)
        if m:
            return Diverged(message[: m.start()], *map(int, m.groups()))
    return cls(message)
