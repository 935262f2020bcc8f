"""The logd client: a blocking connection over ``logd.protocol``.

``connect()`` returns a ``Client``. Every method sends one command and reads
its reply; ``read()`` and ``follow()`` are iterators over a READ stream.
All framing and reply parsing is ``protocol.ReplyParser``'s job; this module
only moves bytes and checks the one thing the parser cannot, that ids come in
sequence (each record's id is the previous id + 1).

Strategy and limits:

- Plain stdlib sockets, so the client works in threads and, once gevent has
  monkey-patched ``socket``, in greenlets. No asyncio.
- Foreign exceptions are translated at the boundary: any ``OSError`` (timeouts
  included) or an unexpected close becomes ``errors.ConnectionLost`` raised
  ``from`` the original. After a lost connection, a broken stream or a reply
  after which the server closes, the socket is dropped; the next call
  connects again. A failed call is never retried silently, since a MSG may
  or may not have been written; only establishing a connection is retried,
  for up to ``wait`` seconds (0 by default), before anything is sent.
- Nothing the server sends is trusted: ``ReplyParser`` bounds every line
  and body, and any reply it cannot use raises a ``LogdError`` (a
  ``ProtocolError`` that drops the connection), never a ``ValueError``.
- Addresses are parsed before any socket is made; a bare port is refused
  (``errors.BadAddress``) instead of being dialled as an IPv4 address.
- Abandoning a ``read()``/``follow()`` iterator early leaves records in
  flight, so the connection is closed rather than drained; again, the next
  call reconnects.
- Pipelining: ``pipeline()`` queues commands and sends them together;
  ``append_many()``/``append_stream()`` keep a window of MSG requests in
  flight. Windows are bounded so that replies can never fill both socket
  buffers while we are still sending (a classic pipelining deadlock).
- Reads are buffered in 256 KiB ``recv`` calls: READ throughput matters.
"""

from __future__ import annotations

import random
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Iterator, Literal, overload

import msgpack

from . import errors
from .errors import (
    BadAddress,
    ConnectionLost,
    LogdError,
    ProtocolError,
    SequenceError,
    ShuttingDown,
    TooManyClients,
)
from .protocol import NEED_DATA, Eof, Ok, OkId, Pong, ReplyParser, encode_command
from .record import Record

__all__ = [
    "DEFAULT_PORT",
    "RECV_SIZE",
    "Client",
    "ObjRecord",
    "Pipeline",
    "backoff_delay",
    "batches",
    "connect",
    "pack",
    "parse_address",
    "unpack",
]

DEFAULT_PORT = 1774
RECV_SIZE = 256 * 1024
# MSG batches built by batches(): small enough for the server's default
# --max-args (10000) and --max-request (64 MiB), big enough to amortise a round trip.
BATCH_COUNT = 1000
BATCH_BYTES = 1024 * 1024
# Requests in flight in append_stream(); each reply is ~12 bytes, so this can
# never fill a socket buffer (see the module docstring on deadlocks).
WINDOW = 64
# Errors after which the server has closed (or will close) the connection.
_FATAL = (ProtocolError, TooManyClients, ShuttingDown, ConnectionLost)
# Errors follow(reconnect=True) waits out.
_RETRYABLE = (ConnectionLost, ShuttingDown, TooManyClients)
# Backoff (base, cap) between attempts to reach a server that is not up yet:
# an attempt on a refused port costs next to nothing, so the cap is low and a
# waiting consumer starts within about a second of the server.
CONNECT_BACKOFF = (0.05, 1.0)


# -- pure helpers -----------------------------------------------------------------


_ADDRESS_FORMS = "host:port, [v6addr]:port, :port (127.0.0.1), host, or a socket path"


def parse_address(address: str) -> tuple[int, str | tuple[str, int]]:
    """Turn ``"host:port"``, ``"[v6]:port"``, ``":port"``, ``"host"`` or a socket path into
    ``(family, sockaddr)``.

    Anything containing a ``/`` (or starting with ``unix:``) is a unix socket.
    ``":port"`` is 127.0.0.1; a host alone gets port 1774. A bare number is
    refused rather than guessed at: ``getaddrinfo`` would take ``17801`` for
    the IPv4 address 0.0.69.137 and dial it off the machine (issue 7, item 15).

    Raises:
        BadAddress: an empty address or path, a bare number, or a port that is
            missing after ``:``, not a number, or not in 1..65535.
    """
    if address.startswith("unix:"):
        if not address[5:]:
            raise BadAddress(f"bad address {address!r}: no socket path after 'unix:'")
        return socket.AF_UNIX, address[5:]
    if "/" in address:
        return socket.AF_UNIX, address
    if not address:
        raise BadAddress(f"empty address; use {_ADDRESS_FORMS}")
    if address.isdigit():
        raise BadAddress(
            f"bad address {address!r}: a port needs a host or a colon; "
            f"write ':{address}' for 127.0.0.1:{address}"
        )
    port: str | None = None  # None: no port given
    if address.startswith("["):  # [::1]:1774
        host, sep, rest = address[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise BadAddress(f"bad address {address!r}; use {_ADDRESS_FORMS}")
        if rest:
            port = rest[1:]
        family = socket.AF_INET6
    elif address.count(":") == 1:
        host, port = address.split(":")
        family = socket.AF_INET
    elif ":" in address:  # bare IPv6 literal, no port
        host = address
        family = socket.AF_INET6
    else:
        host = address
        family = socket.AF_INET
    if port is None:
        portnum = DEFAULT_PORT
    elif not port:
        # "host:$PORT" with PORT unset: an error, not a silent default.
        raise BadAddress(f"bad address {address!r}: no port after ':'")
    elif port.isdigit() and port.isascii() and 1 <= int(port) <= 65535:
        portnum = int(port)
    else:
        raise BadAddress(f"bad address {address!r}: the port must be a number in 1..65535")
    return family, (host or "127.0.0.1", portnum)


def backoff_delay(
    failures: int,
    base: float = 0.05,
    cap: float = 5.0,
    rand: Callable[[float, float], float] = random.uniform,
) -> float:
    """Capped exponential backoff with "equal jitter": in [d/2, d], d = min(cap, base * 2**failures).

    Half of the delay is fixed so that a reconnect storm still spreads out but
    no attempt retries immediately.
    """
    d: float = min(cap, base * float(2 ** min(failures, 32)))
    return d / 2 + rand(0.0, d / 2)


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
    """The continuity check: the first id is ``start`` (any id for 0), then each is +1."""

    __slots__ = ("next",)

    def __init__(self, start: int) -> None:
        self.next = start  # 0: the server picks the first retained id

    def check(self, id: int) -> None:
        if id != self.next and self.next != 0:
            raise SequenceError(f"expected record {self.next}, got {id}")
        if id < 1:
            raise SequenceError(f"record id {id} is not positive")
        self.next = id + 1


# -- the connection -----------------------------------------------------------------


class Client:
    """One connection to a logd server. Not thread-safe: use one per thread.

    ``timeout`` bounds each wait for reply bytes (``None``: wait forever);
    ``connect_timeout`` bounds each attempt to establish the connection;
    ``wait`` is how long (seconds; ``math.inf``: forever) a refused or
    unreachable server is retried, with capped, jittered backoff, whenever
    the client connects. The constructor does not connect.

    Raises:
        BadAddress: ``address`` cannot be parsed.
    """

    def __init__(
        self,
        address: str = f"127.0.0.1:{DEFAULT_PORT}",
        timeout: float | None = 10.0,
        connect_timeout: float | None = 5.0,
        *,
        wait: float = 0.0,
        sock: socket.socket | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.wait = wait
        self._family, self._sockaddr = parse_address(address)
        self._sock: socket.socket | None = sock
        self._parser = ReplyParser()
        self._closes = 0  # close() calls: a follow or a connect() under way ends quietly
        if sock is not None:
            sock.settimeout(timeout)

    # -- lifecycle

    def connect(self, wait: float | None = None) -> None:
        """Open the connection if it is not open.

        A refused, unreachable or timed-out attempt is retried with capped,
        jittered backoff (``CONNECT_BACKOFF``) until ``wait`` seconds have
        passed (default: the client's ``wait``; 0: one attempt).

        Raises:
            ConnectionLost: the server cannot be reached (within ``wait``).
        """
        if self._sock is not None:
            return
        wait = self.wait if wait is None else wait
        deadline = time.monotonic() + max(wait, 0.0)
        closes = self._closes
        failures = 0
        while True:
            try:
                sock = self._dial()
                break
            except OSError as exc:
                failures += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._closes != closes:
                    tries = f" ({failures} attempts in {wait:g} s)" if failures > 1 else ""
                    raise ConnectionLost(f"cannot connect to {self.address}: {exc}{tries}") from exc
                time.sleep(min(left, backoff_delay(failures - 1, *CONNECT_BACKOFF)))
        if self._closes != closes:  # close() from another thread while we dialled
            sock.close()
            raise ConnectionLost(f"connecting to {self.address}: closed by close()")
        self._sock = sock
        self._parser = ReplyParser()

    def _dial(self) -> socket.socket:
        """One connection attempt. Raises: OSError."""
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self._sockaddr)
            if self._family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _keepalive(sock)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Close the connection. Safe to call from another thread to end a ``follow()``:
        the follow then stops (returns) instead of raising or reconnecting.
        """
        self._closes += 1
        self._drop()

    def _drop(self) -> None:
        """Forget the socket after an error; the next call connects again."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                # shutdown() wakes a recv() blocked in another thread; close() alone does not.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def buffered(self) -> int:
        """Reply bytes received but not parsed yet; 0 means the next record will wait on the socket."""
        return self._parser.buffered

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop()

    def __repr__(self) -> str:
        state = "connected" if self._sock else "closed"
        return f"<logd.Client {self.address} {state}>"

    # -- byte moving; the only places that touch the socket

    def _send(self, data: bytes) -> None:
        self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._drop()
            raise ConnectionLost(f"send to {self.address} failed: {exc}") from exc

    def _fill(self) -> None:
        """Receive one chunk into the parser (blocking up to the socket timeout)."""
        sock = self._sock
        if sock is None:
            raise ConnectionLost("not connected")
        try:
            data = sock.recv(RECV_SIZE)
        except OSError as exc:
            self._drop()
            raise ConnectionLost(f"receive from {self.address} failed: {exc}") from exc
        if not data:
            self._drop()
            raise ConnectionLost(f"{self.address} closed the connection")
        self._parser.receive_data(data)

    def _wait(self, step: Callable[[], Any]) -> Any:
        """Run a parser step until it returns something other than NEED_DATA.

        A fatal error drops the connection; a recoverable error reply (bad
        request, not retained...) leaves it usable.
        """
        try:
            while True:
                got = step()
                if got is not NEED_DATA:
                    return got
                self._fill()
        except _FATAL:
            self._drop()
            raise

    def _reply(self) -> Ok | OkId | Pong:
        return self._wait(self._parser.next_reply)  # type: ignore[no-any-return]

    def _expect(self, want: type, what: str) -> Any:
        got = self._reply()
        if not isinstance(got, want):
            self._drop()
            raise ProtocolError(f"{what}: unexpected reply {got!r}")
        return got

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
        self._send(encode_command("MSG", *bodies))
        return self._append_reply(len(bodies))

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
        pending: deque[int] = deque()
        try:
            for batch in batches:
                bodies = list(batch)
                if not bodies:
                    continue
                self._send(encode_command("MSG", *bodies))
                pending.append(len(bodies))
                while len(pending) >= window:
                    yield self._append_reply(pending.popleft())
            while pending:
                yield self._append_reply(pending.popleft())
        finally:
            if pending:
                self._drop()  # replies still due; the connection is out of step

    def _append_reply(self, count: int) -> range:
        last = self._expect(OkId, "MSG").id
        if last < count:  # ids start at 1: OK 1 cannot end a MSG of 3
            self._drop()
            raise ProtocolError(f"MSG of {count} answered with last id {last}")
        return range(last - count + 1, last + 1)

    def append_many(self, batches: Iterable[Iterable[bytes]], window: int = WINDOW) -> list[range]:
        """Pipelined ``append`` of several batches; returns each batch's ids, in order."""
        return list(self.append_stream(batches, window))

    def head(self) -> int:
        """The newest id, 0 on an empty log."""
        self._send(encode_command("HEAD"))
        return self._expect(OkId, "HEAD").id  # type: ignore[no-any-return]

    def ping(self) -> float:
        """Round trip a PING; return the seconds it took (as ``pipeline().ping()`` does)."""
        t0 = time.perf_counter()
        self._send(encode_command("PING"))
        self._expect(Pong, "PING")
        return time.perf_counter() - t0

    def shutdown(self) -> None:
        """Stop the server gracefully (SHUTDOWN); return once it has acknowledged and
        closed this connection.

        The server then finishes what is in flight, flushes and exits; the
        connection closing is as much as a client can see of that.

        Raises:
            Forbidden: SHUTDOWN is taken only from loopback or the unix socket.
            ConnectionLost: the server cannot be reached, or it acknowledged but
                did not close the connection within the client's timeout.
        """
        self._send(encode_command("SHUTDOWN"))
        self._expect(Ok, "SHUTDOWN")
        sock = self._sock
        assert sock is not None
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            while True:  # nothing more is due; whatever comes is skipped, not kept
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("timed out")
                    sock.settimeout(left)
                if not sock.recv(RECV_SIZE):
                    return
        except ConnectionResetError:
            return  # closed, abruptly
        except OSError as exc:
            raise ConnectionLost(
                f"{self.address} acknowledged SHUTDOWN but did not close the connection: {exc}"
            ) from exc
        finally:
            self._drop()

    def stats(self) -> dict[str, Any]:
        """The server's counters, decoded from ``STATS msgpack``."""
        self._send(encode_command("STATS", "msgpack"))
        return _decode_stats(self._wait(self._parser.next_body).data)

    def stats_text(self) -> str:
        """The server's ``STATS text`` body, as sent."""
        self._send(encode_command("STATS"))
        return self._wait(self._parser.next_body).data.decode("utf-8", "replace")  # type: ignore[no-any-return]

    def pipeline(self) -> Pipeline:
        """Queue commands, send them together, collect the replies in order."""
        return Pipeline(self)

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
            self._closes,
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
            try:
                for rec in self._stream(seq.next, 0, idle_timeout, seq):
                    failures = 0
                    yield rec
            except _RETRYABLE as exc:
                if self._closes != closes:
                    return  # close() from another thread ends the follow
                if not reconnect or (max_retries is not None and failures >= max_retries):
                    raise
                self._drop()
                if on_reconnect is not None:
                    on_reconnect(failures + 1, exc)
                time.sleep(backoff_delay(failures, backoff_base, backoff_cap))
                failures += 1
                if self._closes != closes:
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
        remaining = limit
        streaming = False  # records may be in flight: the connection is out of step
        try:
            while True:
                self._send(encode_command("READ", seq.next, remaining))
                self._expect(Ok, "READ")  # NotRetained/OutOfRange leave the connection usable
                streaming = True
                if self._sock is not None:
                    self._sock.settimeout(timeout)
                got_any = False
                while True:
                    if self._sock is None:  # closed: what is buffered belongs to a dead stream
                        raise ConnectionLost("the connection was closed")
                    item = self._wait(self._parser.next_record)
                    if isinstance(item, Eof):
                        break
                    seq.check(item.id)
                    got_any = True
                    yield item
                    if remaining:
                        remaining -= 1
                streaming = False
                if self._sock is not None:
                    self._sock.settimeout(self.timeout)
                if limit and remaining == 0:
                    return
                if not got_any:
                    raise ProtocolError(f"READ {seq.next} ended with +EOF and no records")
        finally:
            if streaming:
                # Abandoned (break, error, GeneratorExit) with records in
                # flight: closing is cheaper than draining a follow.
                self._drop()


class Pipeline:
    """Commands queued on a client, sent in one go by ``execute()``.

    Each queued method returns the pipeline, so calls chain::

        ids, head, _ = client.pipeline().append(b"a", b"b").head().ping().execute()

    ``execute()`` reads every reply, even after an error reply, so the
    connection stays in step; then it raises the first error (or, with
    ``raise_on_error=False``, returns the exception objects in place).
    Streams (READ) cannot be pipelined.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        # (request bytes, reader of its reply given the time the request was sent)
        self._commands: list[tuple[bytes, Callable[[float], Any]]] = []

    def __len__(self) -> int:
        return len(self._commands)

    def append(self, *bodies: bytes) -> Pipeline:
        if not bodies:
            raise errors.InvalidArgument("append needs at least one body")
        n = len(bodies)
        c = self._client
        self._commands.append((encode_command("MSG", *bodies), lambda sent: c._append_reply(n)))
        return self

    def append_obj(self, *objs: Any) -> Pipeline:
        return self.append(*(pack(o) for o in objs))

    def head(self) -> Pipeline:
        c = self._client
        self._commands.append((encode_command("HEAD"), lambda sent: c._expect(OkId, "HEAD").id))
        return self

    def ping(self) -> Pipeline:
        """Queue a PING; its result is the seconds from sending it to reading its PONG
        (as ``Client.ping()``; here it includes the wait behind earlier replies)."""
        c = self._client

        def read(sent: float) -> float:
            c._expect(Pong, "PING")
            return time.perf_counter() - sent

        self._commands.append((encode_command("PING"), read))
        return self

    def stats(self) -> Pipeline:
        c = self._client
        self._commands.append(
            (
                encode_command("STATS", "msgpack"),
                lambda sent: _decode_stats(c._wait(c._parser.next_body).data),
            )
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
            except _FATAL:
                raise
            except LogdError as exc:  # the connection is still in step
                results.append(exc)

        try:
            i = 0
            while i < len(commands):
                chunk = commands[i : i + max(1, window - len(pending))]
                i += len(chunk)
                sent = time.perf_counter()
                self._client._send(b"".join(data for data, _ in chunk))
                pending.extend((read, sent) for _, read in chunk)
                while len(pending) >= window or (pending and i == len(commands)):
                    collect()
        except BaseException:
            if pending:
                self._client._drop()
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


def _decode_stats(body: bytes) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"STATS msgpack body does not decode: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"STATS msgpack body is a {type(obj).__name__}, not a map")
    return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _keepalive(sock: socket.socket) -> None:
    """Notice a dead server within ~30 s even on an idle follow (Linux options where present)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        opt = getattr(socket, name, None)
        if opt is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
            except OSError:
                pass
