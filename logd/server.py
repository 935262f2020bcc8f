"""The gevent adapter: sockets <-> protocol <-> EventQueue. It decides nothing.

Each connection has two greenlets. The reader (``handle``) receives bytes,
parses commands and submits them to the queue, keeping up to
``max_pipeline`` replies pending; the writer sends replies in request order,
coalescing the ready ones into one send. A READ reply is a ``Stream``: the
writer sends the records itself, straight from the partition files with
``os.sendfile`` (``stream.py``), so the event queue never waits on a reader.
"""

from __future__ import annotations

import itertools
import os
import socket
from typing import Any

import gevent
import structlog
from gevent.event import AsyncResult, Event
from gevent.pool import Pool
from gevent.queue import Full, Queue
from gevent.server import StreamServer

from . import protocol as p
from . import stats as st
from .config import ServerConfig
from .errors import ClientError, ProtocolError, TooManyClients
from .events import CloseAfter, EventQueue, Peer, Stream
from .stream import SendTimeout, send_all, stream_records

__all__ = ["Listener", "tcp_listener", "unix_listener"]

log = structlog.get_logger("logd.server")

_conn_ids = itertools.count(1)
_CLOSE = object()


class _Ready:
    """A reply known at parse time (a parse error), shaped like an AsyncResult."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def ready(self) -> bool:
        return True

    def get(self) -> Any:
        return self.value


def tcp_listener(host: str, port: int, backlog: int = 511) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def unix_listener(path: str, backlog: int = 511) -> socket.socket:
    """Listen on a unix socket at ``path``, never taking it from a live server.

    A socket file that nobody answers on is stale (a crash left it) and is
    replaced; a socket that answers, or anything that is not a socket, is
    left alone (issue 7 item 8).

    Raises:
        OSError: with a message naming ``path``.
    """
    import stat

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None:
        if not stat.S_ISSOCK(mode):
            raise OSError(f"unix socket path {path} exists and is not a socket; "
                          "remove it or choose another --unix path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            live = False
        except OSError:  # a full backlog (EAGAIN) or a slow peer: somebody is there
            live = True
        else:
            live = True
        finally:
            probe.close()
        if live:
            raise OSError(f"unix socket {path} is in use by another server; "
                          "stop it or choose another --unix path")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on unix socket {path}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


class Listener:
    """One StreamServer feeding the shared EventQueue."""

    def __init__(self, queue: EventQueue, config: ServerConfig, sock: socket.socket) -> None:
        self.queue = queue
        self.config = config
        self.stats = queue.stats
        self.limits = p.Limits(config.max_line, config.max_message, config.max_args, config.max_request)
        self.is_unix = sock.family == socket.AF_UNIX
        # The pool is a hard cap above max_clients: past max_clients we still
        # accept, to say so, instead of leaving clients hanging in the backlog.
        self.server = StreamServer(sock, self.handle, spawn=Pool(config.max_clients + 64))
        self.connections: set[_Connection] = set()
        queue.servers.append(self)

    @property
    def address(self) -> Any:
        return self.server.address

    def start(self) -> None:
        self.server.start()

    def close(self) -> None:
        """Stop accepting new connections."""
        self.server.close()

    def stop(self, timeout: float) -> None:
        """End every connection: pending replies are flushed, then it closes."""
        for conn in list(self.connections):
            conn.gone.set()
            try:
                conn.sock.shutdown(socket.SHUT_RD)  # the reader sees EOF and winds down
            except OSError:
                pass
        self.server.stop(timeout=timeout)

    def handle(self, sock: socket.socket, address: Any) -> None:
        stats = self.stats
        stats.incr(st.CONNECTIONS_TOTAL)
        if stats.connections >= self.config.max_clients:
            stats.incr(st.CONNECTIONS_REJECTED)
            try:
                sock.sendall(p.encode_error(TooManyClients("max number of clients reached")))
            except OSError:
                pass
            return
        if self.is_unix:
            peer = Peer("unix", True)
        else:
            host = address[0]
            peer = Peer(f"{host}:{address[1]}", host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1"))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        conn = _Connection(self, sock, peer)
        stats.connections += 1
        self.connections.add(conn)
        structlog.contextvars.bind_contextvars(conn_id=conn.id, peer=peer.addr)
        try:
            conn.run()
        finally:
            self.connections.discard(conn)
            stats.connections -= 1
            structlog.contextvars.clear_contextvars()


class _Connection:
    def __init__(self, listener: Listener, sock: socket.socket, peer: Peer) -> None:
        self.id = next(_conn_ids)
        self.listener = listener
        self.queue = listener.queue
        self.config = listener.config
        self.sock = sock
        self.peer = peer
        self.parser = p.CommandParser(listener.limits)
        self.pending: Queue = Queue(self.config.max_pipeline)
        self.gone = Event()  # the peer disconnected, or the server is stopping
        self.close_requested = Event()  # CLOSE arrived: ends a follow early
        self.closing = False
        self.writer_busy = False

    def run(self) -> None:
        writer = gevent.spawn(self._write_loop)
        try:
            self._read_loop()
        except (OSError, SendTimeout) as exc:
            self._note_send_failure(exc)
        finally:
            self.gone.set()
            if not writer.dead:
                try:
                    self.pending.put_nowait(_CLOSE)
                except Full:  # the writer is stuck on a peer that does not read
                    writer.kill()
                writer.join(timeout=self.config.send_timeout)
                writer.kill()

    def _note_send_failure(self, exc: BaseException) -> None:
        # A peer that went away needs no note; one that stopped reading does.
        if isinstance(exc, SendTimeout):
            self.listener.stats.incr(st.SLOW_READERS_DROPPED)
            log.info("slow_reader_dropped")

    # -- reading ------------------------------------------------------------------

    def _recv_timeout(self) -> float | None:
        if self.parser.in_progress:
            return self.config.partial_timeout or None
        return self.config.idle_timeout or None

    def _idle(self) -> bool:
        # Waiting on our own replies or a stream is not idleness.
        return self.pending.empty() and not self.writer_busy

    def _read_loop(self) -> None:
        sock, parser, submit = self.sock, self.parser, self.queue.submit
        timeout = self.config.send_timeout
        while not self.closing:
            try:
                wait = self._recv_timeout()
                if wait is None:
                    data = sock.recv(262144)
                else:
                    with gevent.Timeout(wait):
                        data = sock.recv(262144)
            except gevent.Timeout:
                if not parser.in_progress and not self._idle():
                    continue
                self.listener.stats.incr(st.TIMEOUTS)
                log.info("connection_timeout", partial=parser.in_progress)
                return
            except OSError:
                return
            parser.receive_data(data)
            # Replies that are ready, with nothing queued ahead of them, are sent
            # from here in one write per received chunk; the rest go to the writer.
            out: list[bytes] = []
            try:
                while True:
                    try:
                        command = parser.next_command()
                    except ProtocolError as exc:
                        self.listener.stats.incr(st.PROTOCOL_ERRORS)
                        log.info("protocol_error", error=exc.message)
                        self._reply(out, _Ready(CloseAfter(p.encode_error(exc))))
                        return
                    except ClientError as exc:
                        self._reply(out, _Ready(p.encode_error(exc)))
                        continue
                    if isinstance(command, p.NeedData):
                        break
                    if type(command) is p.Close:
                        # Ends a follow now, instead of queueing behind it forever.
                        self.close_requested.set()
                    self._reply(out, submit(command, self.peer))
            finally:
                if out:
                    if self.listener.stats.tail_readers:
                        gevent.sleep(0)  # tail readers woken by this chunk's commits go first
                    send_all(sock, b"".join(out), timeout)
            if not data:
                return

    def _reply(self, out: list[bytes], result: Any) -> None:
        if not self.writer_busy and self.pending.empty() and result.ready():
            value = result.get()
            if type(value) is bytes:
                out.append(value)
                return
        if out:
            send_all(self.sock, b"".join(out), self.config.send_timeout)
            out.clear()
        self.pending.put(result)  # blocks when max_pipeline replies are due

    # -- writing ------------------------------------------------------------------

    def _write_loop(self) -> None:
        # A new greenlet starts with an empty context: bind ours again.
        structlog.contextvars.bind_contextvars(conn_id=self.id, peer=self.peer.addr)
        try:
            self._write_replies()
        except (OSError, SendTimeout) as exc:
            self._note_send_failure(exc)
        finally:
            self.closing = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _write_replies(self) -> None:
        pending, sock, timeout = self.pending, self.sock, self.config.send_timeout
        out: list[bytes] = []
        while True:
            item = pending.get()
            if item is _CLOSE:
                if out:
                    send_all(sock, b"".join(out), timeout)
                return
            self.writer_busy = True
            reply = item.get()
            if type(reply) is bytes:
                out.append(reply)
                # Coalesce every reply already ready into one send.
                if not pending.empty():
                    nxt = pending.peek()
                    if nxt is not _CLOSE and nxt.ready() and len(out) < 4096:
                        continue
                send_all(sock, b"".join(out), timeout)
                out.clear()
                self.writer_busy = False
                continue
            if out:
                send_all(sock, b"".join(out), timeout)
                out.clear()
            if type(reply) is CloseAfter:
                send_all(sock, reply.reply, timeout)
                return
            if type(reply) is Stream:
                self._stream(reply)
            self.writer_busy = False

    def _stream(self, stream: Stream) -> None:
        stats = self.listener.stats
        follow = stream.limit == 0
        if follow:
            stats.tail_readers += 1
        try:
            stream_records(
                self.sock,
                self.queue,
                stream.start,
                stream.limit,
                self.gone,
                self.close_requested if follow else None,
                self.config.send_timeout,
            )
        finally:
            if follow:
                stats.tail_readers -= 1
