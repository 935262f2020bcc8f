"""The logd command client: commands and READ streams on a ``Connection``.

``connect()`` returns a ``Client``. Every method sends one command and reads
its reply; ``read()`` and ``follow()`` are iterators over a READ stream.
Moving bytes, dialling and reply framing are ``connection.Connection``'s job
(and ``protocol.ReplyParser``'s under it); this module builds requests,
checks that each reply is the kind its command gets, and checks the one thing
the parser cannot, that ids come in sequence (each record's id is the
previous id + 1).

Strategy and limits:

- A failed call is never retried silently, since a MSG may or may not have
  been written; only establishing a connection is retried (for up to
  ``wait`` seconds, before anything is sent), and ``follow(reconnect=True)``
  resumes a stream from the id it owes, with ``logd.backoff`` between tries.
- Nothing the server sends is trusted: ``ReplyParser`` bounds every line
  and body, and any reply it cannot use raises a ``LogdError`` (a
  ``ProtocolError`` that drops the connection), never a ``ValueError``.
- Abandoning a ``read()``/``follow()`` iterator early leaves records in
  flight, so the connection is closed rather than drained; the next call
  reconnects.
- Pipelining: ``pipeline()`` queues commands and sends them together;
  ``append_many()``/``append_stream()`` keep a window of MSG requests in
  flight. Windows are bounded so that replies can never fill both socket
  buffers while we are still sending (a classic pipelining deadlock).
- The READ loop is the hot path of every consumer: it takes records a run
  at a time (``Connection.next_records``, one call per receive), checks the
  run's first id (the parser guarantees the rest follow on) and yields from
  the list, so a record costs one loop step here.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Iterator, Literal, overload

import msgpack

from .. import backoff, errors
from ..errors import ConnectionLost, LogdError, ProtocolError, SequenceError, ShuttingDown, TooManyClients
from ..protocol import Eof, Ok, OkId, Pong, encode_command
from ..record import Record
from .connection import DEFAULT_PORT, FATAL, Connection

__all__ = [
    "BATCH_BYTES",
    "BATCH_COUNT",
    "Client",
    "ObjRecord",
    "Pipeline",
    "WINDOW",
    "append_ids",
    "batches",
    "connect",
    "decode_stats",
    "pack",
    "unpack",
]

# MSG batches built by batches(): small enough for the server's default
# --max-args (10000) and --max-request (64 MiB), big enough to amortise a round trip.
BATCH_COUNT = 1000
BATCH_BYTES = 1024 * 1024
# Requests in flight in append_stream(); each reply is ~12 bytes, so this can
# never fill a socket buffer (see the module docstring on deadlocks).
WINDOW = 64
# Errors follow(reconnect=True) waits out.
_RETRYABLE = (ConnectionLost, ShuttingDown, TooManyClients)


# -- pure helpers -----------------------------------------------------------------


def batches(
    bodies: Iterable[bytes], max_count: int = BATCH_COUNT, max_bytes: int = BATCH_BYTES
) -> Iterator[list[bytes]]:
    """Group bodies into lists of at most ``max_count`` bodies and (about) ``max_bytes``.

    A single body larger than ``max_bytes`` goes alone in its batch.
    """
    batch: list[bytes] = []
    size = 0
    for body in bodies:
        if batch and (len(batch) >= max_count or size + len(body) > max_bytes):
            yield batch
            batch = []
            size = 0
        batch.append(body)
        size += len(body)
    if batch:
        yield batch


def pack(obj: Any) -> bytes:
    """msgpack-encode one structured body."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(body: bytes) -> Any:
    """Decode a body written by ``pack``/``append_obj``."""
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


@dataclass(frozen=True, slots=True)
class ObjRecord:
    """A record whose body was decoded with msgpack (``read(..., decode=True)``)."""

    id: int
    body: bytes
    obj: Any


class _Sequence:
    """The continuity check over runs of consecutive ids (``Connection.next_records``):
    the first id is ``start`` (any id for 0), then each run starts where the last
    record handed out left off. ``next`` is that record's id + 1 (``start`` before any).
    """

    __slots__ = ("next",)

    def __init__(self, start: int) -> None:
        self.next = start  # 0: the server picks the first retained id

    def check(self, run: list[Record]) -> None:
        """Raises SequenceError unless ``run`` (if any) starts at the id due."""
        if not run:
            return
        id = run[0].id
        if id != self.next and self.next != 0:
            raise SequenceError(f"expected record {self.next}, got {id}")
        if id < 1:
            raise SequenceError(f"record id {id} is not positive")


# -- the command client ---------------------------------------------------------------


class Client:
    """Commands and streams on one ``Connection``. Not thread-safe: use one per thread
    (``close()`` alone may come from another thread).

    ``timeout`` bounds each wait for reply bytes (``None``: wait forever);
    ``connect_timeout`` bounds each attempt to establish the connection;
    ``wait`` is how long (seconds; ``math.inf``: forever) a refused or
    unreachable server is retried, with capped, jittered backoff, whenever
    the client connects. The constructor does not connect. ``connection``
    is the ``Connection`` (an instance of ``connection_class``) it runs on.

    Raises:
        BadAddress: ``address`` cannot be parsed.
    """

    connection_class: type[Connection] = Connection

    def __init__(
        self,
        address: str = f"127.0.0.1:{DEFAULT_PORT}",
        timeout: float | None = 10.0,
        connect_timeout: float | None = 5.0,
        *,
        wait: float = 0.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.connection = self.connection_class(
            address, timeout, connect_timeout, wait=wait, sock=sock
        )

    # The connection's settings, readable (and settable) on the client as before the split.

    @property
    def address(self) -> str:
        return self.connection.address

    @property
    def timeout(self) -> float | None:
        return self.connection.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self.connection.timeout = value

    @property
    def connect_timeout(self) -> float | None:
        return self.connection.connect_timeout

    @connect_timeout.setter
    def connect_timeout(self, value: float | None) -> None:
        self.connection.connect_timeout = value

    @property
    def wait(self) -> float:
        return self.connection.wait

    @wait.setter
    def wait(self, value: float) -> None:
        self.connection.wait = value

    # -- lifecycle

    def connect(self, wait: float | None = None) -> None:
        """Open the connection if it is not open; see ``Connection.connect``.

        Raises:
            ConnectionLost: the server cannot be reached (within ``wait``).
        """
        self.connection.connect(wait)

    def close(self) -> None:
        """Close the connection. Safe to call from another thread to end a ``follow()``:
        the follow then stops (returns) instead of raising or reconnecting.
        """
        self.connection.close()

    @property
    def connected(self) -> bool:
        return self.connection.connected

    @property
    def buffered(self) -> int:
        """Reply bytes received but not parsed yet; 0 means the next record will wait on the socket."""
        return self.connection.buffered

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.drop()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<logd.Client {self.address} {state}>"

    # -- commands

    def append(self, *bodies: bytes) -> range:
        """Append bodies atomically, with consecutive ids; return the ids written.

        Raises:
            InvalidArgument: no body, or an empty one (nothing was written).
            Refused: this server does not take writes (``.primary`` may say who does).
            ConnectionLost: the connection failed; the write may or may not have happened.
        """
        if not bodies:
            raise errors.InvalidArgument("append needs at least one body")
        self.connection.send(encode_command("MSG", *bodies))
        return append_ids(self.connection, len(bodies))

    def append_obj(self, *objs: Any) -> range:
        """Append msgpack-encoded objects; see ``append``."""
        return self.append(*(pack(o) for o in objs))

    def append_stream(
        self, batches: Iterable[Iterable[bytes]], window: int = WINDOW
    ) -> Generator[range, None, None]:
        """Send one MSG per batch, ``window`` of them in flight; yield each batch's ids in order.

        Lazy: nothing is sent until iterated. Stops at the first error reply
        (after which the connection is dropped, since later replies are still due).
        """
        conn = self.connection
        pending: deque[int] = deque()
        try:
            for batch in batches:
                bodies = list(batch)
                if not bodies:
                    continue
                conn.send(encode_command("MSG", *bodies))
                pending.append(len(bodies))
                while len(pending) >= window:
                    yield append_ids(conn, pending.popleft())
            while pending:
                yield append_ids(conn, pending.popleft())
        finally:
            if pending:
                conn.drop()  # replies still due; the connection is out of step

    def append_many(self, batches: Iterable[Iterable[bytes]], window: int = WINDOW) -> list[range]:
        """Pipelined ``append`` of several batches; returns each batch's ids, in order."""
        return list(self.append_stream(batches, window))

    def head(self) -> int:
        """The newest id, 0 on an empty log."""
        self.connection.send(encode_command("HEAD"))
        return self.connection.expect(OkId, "HEAD").id  # type: ignore[union-attr]

    def ping(self) -> float:
        """Round trip a PING; return the seconds it took (as ``pipeline().ping()`` does)."""
        t0 = time.perf_counter()
        self.connection.send(encode_command("PING"))
        self.connection.expect(Pong, "PING")
        return time.perf_counter() - t0

    def shutdown(self) -> None:
        """Stop the server gracefully (SHUTDOWN); return once it has acknowledged and
        closed this connection.

        The server then finishes what is in flight, flushes and exits; the
        connection closing is as much as a client can see of that.

        Raises:
            Forbidden: SHUTDOWN is an admin command (--admin-from, the unix socket, or ``auth``).
            ConnectionLost: the server cannot be reached, or it acknowledged but
                did not close the connection within the client's timeout.
        """
        conn = self.connection
        conn.send(encode_command("SHUTDOWN"))
        conn.expect(Ok, "SHUTDOWN")
        try:
            conn.wait_closed()  # nothing more is due; whatever comes is skipped, not kept
        except ConnectionLost as exc:
            raise ConnectionLost(
                f"{self.address} acknowledged SHUTDOWN but did not close the connection: "
                f"{exc.__cause__}"
            ) from exc.__cause__

    def auth(self, token: str) -> None:
        """Send the admin token (``AUTH``): admin commands are then accepted on
        this connection from any address.

        Raises:
            Forbidden: the token is wrong.
            InvalidArgument: the server has no admin token configured.
        """
        self.connection.send(encode_command("AUTH", token))
        self.connection.expect(Ok, "AUTH")

    def refuse(self, new_primary: str = "", partition: int = 0) -> int:
        """Stop the server taking writes (``REFUSE``); return the final id, once fsynced.

        Raises:
            Forbidden: admin commands are not accepted from here (see ``auth``).
        """
        args: list[str | int] = [partition] + ([new_primary] if new_primary else [])
        self.connection.send(encode_command("REFUSE", *args))
        return self.connection.expect(OkId, "REFUSE").id  # type: ignore[union-attr]

    def accept(self, partition: int = 0) -> tuple[int, int, bool]:
        """Make the server a primary (``ACCEPT``); return ``(epoch, first id, changed)``:
        ``changed`` is False when it was already primary.

        Raises:
            Forbidden: admin commands are not accepted from here (see ``auth``).
            StorageError: a read replica's directory is held by another writer (a follower).
        """
        self.connection.send(encode_command("ACCEPT", partition))
        text = self.connection.next_ok_text()
        words = dict(w.split("=", 1) for w in text.split() if "=" in w)
        try:
            return int(words["epoch"]), int(words["first"]), not text.startswith("already")
        except (KeyError, ValueError):
            self.connection.drop()
            raise ProtocolError(f"ACCEPT: unexpected reply {text[:80]!r}") from None

    def stats(self) -> dict[str, Any]:
        """The server's counters, decoded from ``STATS msgpack``."""
        self.connection.send(encode_command("STATS", "msgpack"))
        return decode_stats(self.connection.next_body().data)

    def stats_text(self) -> str:
        """The server's ``STATS text`` body, as sent."""
        self.connection.send(encode_command("STATS"))
        return self.connection.next_body().data.decode("utf-8", "replace")

    def pipeline(self) -> Pipeline:
        """Queue commands, send them together, collect the replies in order."""
        return Pipeline(self.connection)

    # -- streams

    @overload
    def read(
        self, start: int, limit: int, *, decode: Literal[False] = ..., timeout: float | None = ...
    ) -> Generator[Record, None, None]: ...

    @overload
    def read(
        self, start: int, limit: int, *, decode: Literal[True], timeout: float | None = ...
    ) -> Generator[ObjRecord, None, None]: ...

    def read(
        self, start: int, limit: int, *, decode: bool = False, timeout: float | None = -1.0
    ) -> Generator[Record, None, None] | Generator[ObjRecord, None, None]:
        """Yield ``limit`` records from ``start`` (0: the first retained id).

        Records not written yet are waited for; ``timeout`` bounds each wait
        (default: the client's timeout; ``None``: forever). Each record's
        checksum and id sequence is checked.

        Raises:
            NotRetained: ``start`` is below the first retained id (``.first``).
            OutOfRange: ``start`` is past head + 1.
            ChecksumError, SequenceError: a bad record arrived (nothing bad is yielded).
            ConnectionLost: on a broken connection or timeout.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1; use follow() to read forever")
        it = self._stream(start, limit, self.timeout if timeout == -1.0 else timeout)
        return _decoded(it) if decode else it

    @overload
    def follow(
        self,
        start: int,
        *,
        reconnect: bool = ...,
        decode: Literal[False] = ...,
        idle_timeout: float | None = ...,
        max_retries: int | None = ...,
        backoff_base: float = ...,
        backoff_cap: float = ...,
        on_reconnect: Callable[[int, BaseException], None] | None = ...,
    ) -> Generator[Record, None, None]: ...

    @overload
    def follow(
        self,
        start: int,
        *,
        reconnect: bool = ...,
        decode: Literal[True],
        idle_timeout: float | None = ...,
        max_retries: int | None = ...,
        backoff_base: float = ...,
        backoff_cap: float = ...,
        on_reconnect: Callable[[int, BaseException], None] | None = ...,
    ) -> Generator[ObjRecord, None, None]: ...

    def follow(
        self,
        start: int,
        *,
        reconnect: bool = False,
        decode: bool = False,
        idle_timeout: float | None = None,
        max_retries: int | None = None,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        on_reconnect: Callable[[int, BaseException], None] | None = None,
    ) -> Generator[Record, None, None] | Generator[ObjRecord, None, None]:
        """Yield records from ``start`` forever: history, then each new record.

        ``idle_timeout`` bounds the wait for the next record (``None``:
        forever; TCP keepalive still notices a dead peer). With
        ``reconnect=True`` a lost connection, a server shutdown or
        MAXCLIENTS is waited out with capped exponential backoff plus jitter,
        and the stream resumes from the last yielded id + 1 (or ``start`` if
        nothing was yielded yet). That covers the first connection too: on a
        client that is not connected, a server not up yet is waited for in
        the same way. ``max_retries`` consecutive failures
        (``None``: no limit) re-raise. ``on_reconnect(failures, exc)`` is
        called before each wait. A gap is never skipped: if the resume point
        is no longer retained, NotRetained is raised.
        """
        # A close() before this call ended an earlier follow, not this one.
        it = self._follow(
            start, reconnect, idle_timeout, max_retries, backoff_base, backoff_cap, on_reconnect,
            self.connection.closes,
        )
        return _decoded(it) if decode else it

    def _follow(
        self,
        start: int,
        reconnect: bool,
        idle_timeout: float | None,
        max_retries: int | None,
        backoff_base: float,
        backoff_cap: float,
        on_reconnect: Callable[[int, BaseException], None] | None,
        closes: int,
    ) -> Generator[Record, None, None]:
        seq = _Sequence(start)
        failures = 0
        while True:
            resume = seq.next
            try:
                yield from self._stream(seq.next, 0, idle_timeout, seq)
            except _RETRYABLE as exc:
                if seq.next != resume:  # records came since the last failure
                    failures = 0
                if self.connection.closes != closes:
                    return  # close() from another thread ends the follow
                if not reconnect or (max_retries is not None and failures >= max_retries):
                    raise
                self.connection.drop()
                if on_reconnect is not None:
                    on_reconnect(failures + 1, exc)
                time.sleep(backoff.delay(failures, backoff_base, backoff_cap))
                failures += 1
                if self.connection.closes != closes:
                    return

    def _stream(
        self, start: int, limit: int, timeout: float | None, seq: _Sequence | None = None
    ) -> Generator[Record, None, None]:
        """Run READ start limit; yield verified records; re-issue READ after an early +EOF.

        The server may end a stream early with +EOF (a reader too slow for
        its fan-out queue); the connection stays usable, so we ask again from
        the next id. ``limit`` 0 means forever.
        """
        if seq is None:
            seq = _Sequence(start)
        conn = self.connection
        # Bound once: the loop below runs per run of records. A close() (even
        # from another thread) drops the connection's buffered bytes and
        # empties the run being yielded, so no record of the dead stream is
        # handed out.
        next_records = conn.next_records
        remaining = limit
        streaming = False  # records may be in flight: the connection is out of step
        rec: Record | None = None  # the last record handed out
        try:
            while True:
                conn.send(encode_command("READ", seq.next, remaining))
                conn.expect(Ok, "READ")  # NotRetained/OutOfRange leave the connection usable
                streaming = True
                conn.settimeout(timeout)
                got_any = False
                while True:
                    run = next_records()
                    if isinstance(run, Eof):
                        break
                    seq.check(run)
                    for rec in run:
                        yield rec
                    if rec is not None:
                        seq.next = rec.id + 1
                    got_any = True
                    remaining = max(remaining - len(run), 0)  # 0 stays 0: forever
                streaming = False
                conn.settimeout(conn.timeout)
                if limit and remaining == 0:
                    return
                if not got_any:
                    raise ProtocolError(f"READ {seq.next} ended with +EOF and no records")
        finally:
            if rec is not None:  # thrown in at a yield: the records after it are still owed
                seq.next = rec.id + 1
            if streaming:
                # Abandoned (break, error, GeneratorExit) with records in
                # flight: closing is cheaper than draining a follow.
                conn.drop()


class Pipeline:
    """Commands queued on a client, sent in one go by ``execute()``.

    Each queued method returns the pipeline, so calls chain::

        ids, head, _ = client.pipeline().append(b"a", b"b").head().ping().execute()

    ``execute()`` reads every reply, even after an error reply, so the
    connection stays in step; then it raises the first error (or, with
    ``raise_on_error=False``, returns the exception objects in place).
    Streams (READ) cannot be pipelined.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # (request bytes, reader of its reply given the time the request was sent)
        self._commands: list[tuple[bytes, Callable[[float], Any]]] = []

    def __len__(self) -> int:
        return len(self._commands)

    def append(self, *bodies: bytes) -> Pipeline:
        if not bodies:
            raise errors.InvalidArgument("append needs at least one body")
        n = len(bodies)
        c = self.connection
        self._commands.append((encode_command("MSG", *bodies), lambda sent: append_ids(c, n)))
        return self

    def append_obj(self, *objs: Any) -> Pipeline:
        return self.append(*(pack(o) for o in objs))

    def head(self) -> Pipeline:
        c = self.connection
        self._commands.append((encode_command("HEAD"), lambda sent: c.expect(OkId, "HEAD").id))  # type: ignore[union-attr]
        return self

    def ping(self) -> Pipeline:
        """Queue a PING; its result is the seconds from sending it to reading its PONG
        (as ``Client.ping()``; here it includes the wait behind earlier replies)."""
        c = self.connection

        def read(sent: float) -> float:
            c.expect(Pong, "PING")
            return time.perf_counter() - sent

        self._commands.append((encode_command("PING"), read))
        return self

    def stats(self) -> Pipeline:
        c = self.connection
        self._commands.append(
            (encode_command("STATS", "msgpack"), lambda sent: decode_stats(c.next_body().data))
        )
        return self

    def execute(self, raise_on_error: bool = True, window: int = 1000) -> list[Any]:
        """Send the queued commands, at most ``window`` unanswered at a time; return the results."""
        commands, self._commands = self._commands, []
        results: list[Any] = []
        pending: deque[tuple[Callable[[float], Any], float]] = deque()

        def collect() -> None:
            read, sent = pending.popleft()
            try:
                results.append(read(sent))
            except FATAL:
                raise
            except LogdError as exc:  # the connection is still in step
                results.append(exc)

        try:
            i = 0
            while i < len(commands):
                chunk = commands[i : i + max(1, window - len(pending))]
                i += len(chunk)
                sent = time.perf_counter()
                self.connection.send(b"".join(data for data, _ in chunk))
                pending.extend((read, sent) for _, read in chunk)
                while len(pending) >= window or (pending and i == len(commands)):
                    collect()
        except BaseException:
            if pending:
                self.connection.drop()
            raise
        if raise_on_error:
            for r in results:
                if isinstance(r, LogdError):
                    raise r
        return results


# -- module functions ---------------------------------------------------------------


def connect(
    address: str = f"127.0.0.1:{DEFAULT_PORT}",
    timeout: float | None = 10.0,
    connect_timeout: float | None = 5.0,
    *,
    wait: float = 0.0,
) -> Client:
    """Connect to a logd server at ``"host:port"`` or a unix socket path.

    ``wait``: for how many seconds a server that refuses or cannot be reached
    is retried, with backoff (0: fail at once; ``math.inf``: forever), so a
    consumer started alongside its server waits for it. The same ``wait``
    applies when the client reconnects later.

    Raises:
        BadAddress: the address cannot be parsed (also a ``ValueError``).
        ConnectionLost: the server cannot be reached within ``wait``.
    """
    client = Client(address, timeout=timeout, connect_timeout=connect_timeout, wait=wait)
    client.connect()
    return client


def _decoded(records: Generator[Record, None, None]) -> Generator[ObjRecord, None, None]:
    try:
        for rec in records:
            yield ObjRecord(rec.id, rec.body, unpack(rec.body))
    finally:
        records.close()  # abandoning the decoded stream abandons the raw one at once


def append_ids(connection: Connection, count: int) -> range:
    """Read a MSG's ``OK <last id>`` and return the ids of its ``count`` bodies.

    Raises:
        ProtocolError: another reply, or a last id too small for ``count`` (the connection is dropped).
        LogdError: the MSG's error reply (nothing was written).
    """
    last: int = connection.expect(OkId, "MSG").id  # type: ignore[union-attr]
    if last < count:  # ids start at 1: OK 1 cannot end a MSG of 3
        connection.drop()
        raise ProtocolError(f"MSG of {count} answered with last id {last}")
    return range(last - count + 1, last + 1)


def decode_stats(body: bytes) -> dict[str, Any]:
    """The map of a ``STATS msgpack`` body, with text keys.

    Raises:
        ProtocolError: the body is not a msgpack map.
    """
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"STATS msgpack body does not decode: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"STATS msgpack body is a {type(obj).__name__}, not a map")
    return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}
