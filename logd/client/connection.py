"""One connection to a logd server: a socket plus a ``ReplyParser``, the client's only I/O.

A ``Connection`` dials (with a connect timeout, TCP keepalive and, for up to
``wait`` seconds, retries spaced by ``logd.backoff``), sends bytes, receives
them into its parser and hands out whole replies, bodies and records. It
knows the protocol's framing (through ``protocol.ReplyParser``) but no
commands: READ, follow, sequence checks and checkpoints are the business of
``logd.client.Client`` on top of it, and the follower (next issue) uses a
``Connection`` with its own semantics.

Strategy and limits:

- Plain stdlib sockets, so it works in threads and, once gevent has
  monkey-patched ``socket``, in greenlets. No asyncio.
- Foreign exceptions are translated here: any ``OSError`` (timeouts
  included) or an unexpected close becomes ``errors.ConnectionLost`` raised
  ``from`` the original, and the socket is dropped. So does any error after
  which the server closes (``FATAL``). The next ``send()`` connects again;
  nothing sent is ever retried, only establishing the connection is.
- Dropping the socket drops its unparsed bytes too: they belong to a
  conversation that is over, so nothing buffered is handed out after a
  ``drop()`` or a ``close()`` from another thread. That includes the last
  run of records ``next_records()`` handed out: the list is emptied, so a
  loop still going through it stops.
- Addresses are parsed before any socket is made; a bare port is refused
  (``errors.BadAddress``) instead of being dialled as an IPv4 address.
- Reads are buffered in 256 KiB ``recv_into`` calls on a buffer the
  connection keeps (made at its first receive): READ throughput matters, and
  a fresh 256 KiB bytes object per receive costs an allocation and its page
  faults.
"""

from __future__ import annotations

import socket
import time

from .. import backoff
from ..errors import BadAddress, ConnectionLost, ProtocolError, ShuttingDown, TooManyClients
from ..protocol import NEED_DATA, Body, Eof, NeedData, Ok, OkId, Pong, ReplyParser
from ..record import Record

__all__ = [
    "CONNECT_BACKOFF",
    "Connection",
    "DEFAULT_PORT",
    "FATAL",
    "RECV_SIZE",
    "parse_address",
    "same_address",
]

DEFAULT_PORT = 1774
RECV_SIZE = 256 * 1024
# Errors after which the server has closed (or will close) the connection.
FATAL = (ProtocolError, TooManyClients, ShuttingDown, ConnectionLost)
# Backoff (base, cap) between attempts to reach a server that is not up yet:
# an attempt on a refused port costs next to nothing, so the cap is low and a
# waiting consumer starts within about a second of the server.
CONNECT_BACKOFF = (0.05, 1.0)

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


def same_address(a: str, b: str) -> bool:
    """Whether two addresses name the same endpoint as written (``127.0.0.1:5``
    and ``127.0.0.1:05``; no DNS: ``localhost`` is not ``127.0.0.1``)."""
    try:
        return parse_address(a) == parse_address(b)
    except BadAddress:
        return a == b


class Connection:
    """A socket to one server and the parser of what it sends. Not thread-safe,
    except that ``close()`` may be called from another thread.

    ``timeout`` bounds each wait for bytes (``None``: forever);
    ``connect_timeout`` bounds each connection attempt; ``wait`` is how long
    (seconds; ``math.inf``: forever) a refused or unreachable server is
    retried whenever the connection is (re)established. ``sock`` adopts an
    already connected socket. The constructor does not connect.

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
        self.family, self.sockaddr = parse_address(address)
        self._sock: socket.socket | None = sock
        self._parser = ReplyParser()
        self._run: list[Record] = []  # the last run next_records() handed out
        self._chunk: memoryview | None = None  # receive()'s buffer
        self._closes = 0
        if sock is not None:
            sock.settimeout(timeout)

    # -- lifecycle

    def connect(self, wait: float | None = None) -> None:
        """Open the connection if it is not open.

        A refused, unreachable or timed-out attempt is retried with capped,
        jittered backoff (``CONNECT_BACKOFF``) until ``wait`` seconds have
        passed (default: the connection's ``wait``; 0: one attempt). A
        ``close()`` meanwhile ends the wait.

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
                sock = self.dial()
                break
            except OSError as exc:
                failures += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._closes != closes:
                    tries = f" ({failures} attempts in {wait:g} s)" if failures > 1 else ""
                    raise ConnectionLost(f"cannot connect to {self.address}: {exc}{tries}") from exc
                time.sleep(min(left, backoff.delay(failures - 1, *CONNECT_BACKOFF)))
        if self._closes != closes:  # close() from another thread while we dialled
            sock.close()
            raise ConnectionLost(f"connecting to {self.address}: closed by close()")
        self._sock = sock
        self._parser = ReplyParser()

    def dial(self) -> socket.socket:
        """One connection attempt: a connected socket with the connection's options set.

        Override (or replace on an instance) to count or script attempts.

        Raises:
            OSError: the attempt failed.
        """
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.sockaddr)
            if self.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                _keepalive(sock)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Close the connection, counting the call in ``closes``. Safe from another
        thread: a blocked ``receive()`` wakes with ``ConnectionLost`` and a
        waiting ``connect()`` gives up.
        """
        self._closes += 1
        self.drop()

    def drop(self) -> None:
        """Forget the socket and its unparsed bytes after an error; ``send()`` connects again."""
        sock, self._sock = self._sock, None
        self._parser = ReplyParser()
        self._run.clear()
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
    def closes(self) -> int:
        """How many times ``close()`` was called: a loop that notes it before it starts
        can tell a ``close()`` (stop quietly) from a failure (retry or raise)."""
        return self._closes

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def buffered(self) -> int:
        """Bytes received but not parsed yet; 0 means the next reply will wait on the socket."""
        return self._parser.buffered

    def fileno(self) -> int:
        """The socket's fd, for ``select``.

        Raises:
            ConnectionLost: not connected.
        """
        if self._sock is None:
            raise ConnectionLost("not connected")
        return self._sock.fileno()

    def settimeout(self, timeout: float | None) -> None:
        """Bound the waits of an open socket until the next ``settimeout`` or reconnect
        (``timeout`` is what a new socket gets)."""
        if self._sock is not None:
            self._sock.settimeout(timeout)

    def __repr__(self) -> str:
        state = "connected" if self._sock else "closed"
        return f"<logd.Connection {self.address} {state}>"

    # -- moving bytes: the only code that touches the socket

    def send(self, data: bytes) -> None:
        """Send all of ``data``, connecting first if need be.

        Raises:
            ConnectionLost: cannot connect, or the send failed (some of it may have arrived).
        """
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.drop()
            raise ConnectionLost(f"send to {self.address} failed: {exc}") from exc

    def receive(self) -> None:
        """Receive one chunk into the parser (blocking up to the timeout).

        Raises:
            ConnectionLost: not connected, the receive failed or timed out, or the server closed.
        """
        sock = self._sock
        if sock is None:
            raise ConnectionLost("not connected")
        chunk = self._chunk
        if chunk is None:
            chunk = self._chunk = memoryview(bytearray(RECV_SIZE))
        try:
            n = sock.recv_into(chunk)
        except OSError as exc:
            self.drop()
            raise ConnectionLost(f"receive from {self.address} failed: {exc}") from exc
        if not n:
            self.drop()
            raise ConnectionLost(f"{self.address} closed the connection")
        self._parser.receive_data(chunk[:n])

    def wait_closed(self) -> None:
        """Skip whatever arrives until the server closes, for up to ``timeout``; then drop.

        Raises:
            ConnectionLost: the server did not close within the timeout (or the wait failed).
        """
        sock = self._sock
        if sock is None:
            return
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        try:
            while True:
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
            raise ConnectionLost(f"{self.address} did not close the connection: {exc}") from exc
        finally:
            self.drop()

    # -- whole replies; each blocks until one is complete. A FATAL error drops
    # the connection; an error reply the server survives (bad request, not
    # retained...) is raised and leaves it usable.

    def next_reply(self) -> Ok | OkId | Pong:
        """The next status reply.

        Raises:
            LogdError: an error reply (its class), or a reply that cannot be trusted.
            ConnectionLost: see ``receive()``.
        """
        return self._wait("next_reply")  # type: ignore[return-value]

    def poll_reply(self) -> Ok | OkId | Pong | NeedData:
        """The next status reply if it is buffered whole, else ``NEED_DATA``; never
        touches the socket, so a ``select`` loop can drain replies between reads.

        Raises:
            LogdError: as ``next_reply()``.
        """
        try:
            return self._parser.next_reply()
        except FATAL:
            self.drop()
            raise

    def next_body(self) -> Body:
        """The next ``OK <length>`` reply with its body (STATS).

        Raises:
            LogdError: as ``next_reply()``.
        """
        return self._wait("next_body")  # type: ignore[return-value]

    def next_record(self) -> Record | Eof:
        """The next item of a READ stream: a record whose checksum is verified, or Eof.

        Raises:
            ChecksumError: the record's checksum does not match.
            LogdError: the server ended the stream with an error line (its class).
            ConnectionLost: see ``receive()``.
        """
        return self._wait("next_record")  # type: ignore[return-value]

    def next_records(self) -> list[Record] | Eof:
        """The next items of a READ stream, many at once: a run of verified records
        with consecutive ids (all those buffered whole), or Eof; see
        ``ReplyParser.next_records``. A ``drop()`` or ``close()`` (from another
        thread too) empties the list, so a loop going through it stops there.

        Raises:
            As ``next_record()``.
        """
        got = self._wait("next_records")
        if isinstance(got, list):
            self._run = got
            if self._sock is None:  # close() from another thread before the line above
                got.clear()
        return got  # type: ignore[return-value]

    def _wait(self, step_name: str) -> object:
        """Run a parser step, receiving more, until it returns something other than NEED_DATA."""
        try:
            # Bound once: if a close() from another thread replaces the
            # parser meanwhile, receive() raises before the old one is used again.
            step = getattr(self._parser, step_name)
            while True:
                got = step()
                if got is not NEED_DATA:
                    return got
                self.receive()
        except FATAL:
            self.drop()
            raise

    def next_ok_text(self) -> str:
        """The words of the next ``OK <words>`` reply (ACCEPT's).

        Raises:
            LogdError: as ``next_reply()``.
        """
        return self._wait("next_ok_text")  # type: ignore[return-value]

    def expect(self, kind: type, what: str) -> Ok | OkId | Pong:
        """``next_reply()``, checked to be a ``kind`` (``Ok``, ``OkId``, ``Pong``).

        Raises:
            ProtocolError: another kind of reply came (the connection is dropped).
            LogdError: as ``next_reply()``.
        """
        got = self.next_reply()
        if not isinstance(got, kind):
            self.drop()
            raise ProtocolError(f"{what}: unexpected reply {got!r}")
        return got


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
