"""The gevent adapter: sockets <-> protocol <-> EventQueue. It decides nothing.

Each connection has two greenlets. The reader (``handle``) receives bytes,
parses commands and submits them to the queue, keeping up to
``max_pipeline`` replies pending; the writer sends replies in request order,
coalescing the ready ones into one send. A READ reply is a ``Stream``: the
writer sends the records itself, straight from the partition files with
``os.sendfile`` (``stream.py``), so the event queue never waits on a reader.

How a connection ends (issue 7; docs/protocol.rst, "Connections"): at EOF
(a half-close) the writer still answers everything received, then closes; on
a timeout or a framing error a last error line goes out after the replies
due; when the writer fails (peer gone, or it takes nothing for the send
timeout) the reader is woken wherever it waits, so the fd, both greenlets and
the ``--max-clients`` slot are released at once.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import socket
import time
from typing import Any

import gevent
import structlog
from gevent.event import Event
from gevent.pool import Pool
from gevent.queue import Full, Queue
from gevent.server import StreamServer

from . import protocol as p
from . import stats as st
from .admin import AdminPolicy
from .config import ServerConfig
from .errors import ClientError, InvalidArgument, ProtocolError, StorageError, TooManyClients
from .events import CloseAfter, EventQueue, Peer, Stream
from .events.acks import WaitAcks
from .events import lag
from .events.handlers import FollowerState, Replication
from .replicate import stream_replication
from .stream import SendTimeout, send_all, stream_records

__all__ = ["Listener", "tcp_listener", "unix_listener"]

log = structlog.get_logger("logd.server")

_conn_ids = itertools.count(1)
_CLOSE = object()
_FD_ERRORS = (errno.EMFILE, errno.ENFILE)
FD_LOG_INTERVAL = 10.0  # seconds between two "out of file descriptors" log lines
# Under glibc's mmap threshold (128 KiB): a larger os.read() buffer is mmap'd,
# faulted in and unmapped on every call, ~8 us per read whatever arrived.
READ_SIZE = 64 * 1024

# How _read_loop ended, which decides how the connection winds down.
_EOF = "eof"  # the peer stopped sending: answer everything, then close
_ENDING = "ending"  # we end it after a last line (timeout, framing error)
_BROKEN = "broken"  # the peer is gone or stuck: close now


class _Timeout(ClientError):
    code = "TIMEOUT"


class _WriterGone(Exception):
    """Raised in the reader when the writer ended: nothing more can be answered."""


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


class _Server(StreamServer):
    """StreamServer that survives running out of file descriptors.

    gevent prints a traceback for every failed accept and retries at once.
    On EMFILE/ENFILE we log once per FD_LOG_INTERVAL, turn the waiting client
    away with an error line using a spare descriptor kept for that (nginx,
    libuv), and pause accepting briefly, then carry on serving.
    """

    def __init__(self, *args: Any, stats: st.Stats, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logd_stats = stats
        self._spare: int | None = _open_spare()
        self._fd_failures = 0
        self._fd_logged = 0.0

    def do_read(self) -> Any:
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno not in _FD_ERRORS:
                raise
            self._out_of_fds(exc)
            return None

    def _out_of_fds(self, exc: OSError) -> None:
        stats = self.logd_stats
        stats.incr(st.ACCEPT_FD_ERRORS)
        self._fd_failures += 1
        now = time.monotonic()
        if now - self._fd_logged >= FD_LOG_INTERVAL:
            log.warning("accept_failed", error=os.strerror(exc.errno or 0), failures=self._fd_failures,
                        connections=stats.connections, hint="raise the fd limit (LimitNOFILE=) "
                        "or lower --max-clients")
            self._fd_logged, self._fd_failures = now, 0
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
            try:
                # gevent's raw accept: returns at once, never waits (the stubs omit it)
                fd, _ = self.socket._accept()  # type: ignore[attr-defined]
                conn = socket.socket(fileno=fd)
            except OSError:
                conn = None
            if conn is not None:
                stats.incr(st.CONNECTIONS_REJECTED)
                try:
                    conn.setblocking(False)
                    conn.send(p.encode_error(TooManyClients("server is out of file descriptors; try later")))
                except OSError:
                    pass
                conn.close()
            self._spare = _open_spare()
        # Pause accepting; connections in flight will free descriptors.
        self.stop_accepting()
        self._timer = self.loop.timer(0.1)
        # BaseServer's own re-arm after a pause (gevent's stubs omit both)
        self._timer.start(self._start_accepting_if_started)  # type: ignore[call-arg, attr-defined]


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class Listener:
    """One StreamServer feeding the shared EventQueue."""

    def __init__(self, queue: EventQueue, config: ServerConfig, sock: socket.socket) -> None:
        self.queue = queue
        self.config = config
        self.stats = queue.stats
        self.limits = p.Limits(config.max_line, config.max_message, config.max_args, config.max_request)
        self.admin = AdminPolicy(config.admin_from)
        self.is_unix = sock.family == socket.AF_UNIX
        # The pool is a hard cap above max_clients: past max_clients we still
        # accept, to say so, instead of leaving clients hanging in the backlog.
        self.server = _Server(sock, self.handle, spawn=Pool(config.max_clients + 64), stats=self.stats)
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
            peer = Peer("unix", self.admin.trusts(None))
        else:
            host = address[0]
            peer = Peer(f"{host}:{address[1]}", self.admin.trusts(host))
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
        self.closing = False  # the writer has ended: stop reading
        self.writer_busy = False
        self.command_began = 0.0  # when the first byte of the incomplete command came
        self.reader_waiting = False  # the reader is blocked on a full pipeline
        self.dropped_slow = False  # counted in slow_readers_dropped already
        self.reader: Any = None
        self.writer: Any = None
        self.follower: FollowerState | None = None  # while a REPLICATE stream runs

    def run(self) -> None:
        self.reader = gevent.getcurrent()
        writer = self.writer = gevent.spawn(self._write_loop)
        ended = _BROKEN
        try:
            ended = self._read_loop()
        except (OSError, SendTimeout) as exc:
            self._note_send_failure(exc)
        except _WriterGone:
            pass
        finally:
            try:
                if ended == _EOF and not writer.dead:
                    # A half-close ends the peer's sending, not its reading: the
                    # writer answers everything received, then closes (item 4).
                    self._enqueue(_CLOSE)
                    self._wait_writer_after_eof(writer)
                elif not writer.dead:
                    if ended == _ENDING:
                        self.close_requested.set()  # a follow ends with +EOF, then the last line
                    else:
                        self.gone.set()
                    try:
                        self.pending.put_nowait(_CLOSE)
                    except Full:  # the writer is stuck on a peer that does not read
                        writer.kill()
                    writer.join(timeout=self.config.send_timeout or 30.0)
            except _WriterGone:
                pass
            except SendTimeout as exc:  # replies left unread: close now
                self._note_send_failure(exc)
            finally:
                self.gone.set()
                writer.kill()

    def _enqueue(self, item: Any) -> None:
        """Put on the pipeline, waiting while it is full, at most the send timeout.

        Raises:
            SendTimeout: the peer left max_pipeline replies unread that long (item 6).
            _WriterGone: the writer ended meanwhile; nobody will take it.
        """
        if self.writer.dead:
            raise _WriterGone()
        self.reader_waiting = True
        try:
            self.pending.put(item, timeout=self.config.send_timeout or None)
        except Full:
            raise SendTimeout() from None
        finally:
            self.reader_waiting = False

    def _wait_writer_after_eof(self, writer: gevent.Greenlet) -> None:
        # Only a follow lasts: it runs until the server stops or the peer is
        # really gone. A peer that closed after its FIN sends nothing more, so
        # ask TCP keepalive to probe soon, and look once a second for the
        # reset that a record or a probe draws (recv only says EOF again).
        if not self.listener.is_unix:
            for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, name):
                    try:
                        self.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
                    except OSError:
                        pass
        while not writer.dead:
            writer.join(timeout=1.0)
            if not writer.dead and self._peer_gone():
                self.gone.set()
                writer.join(timeout=self.config.send_timeout or 30.0)
                return

    def _peer_gone(self) -> bool:
        if self.listener.is_unix:
            return False  # a unix peer that went is seen at the next send
        try:
            if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                return True
            if hasattr(socket, "TCP_INFO"):  # Linux: state 7 is TCP_CLOSE (reset)
                return self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 7
        except OSError:
            return True
        return False

    def _note_send_failure(self, exc: BaseException) -> None:
        # A peer that went away needs no note; one that stopped reading does,
        # once: its writer blocks on the full socket and its reader, refilling
        # the pipeline the writer just took from, blocks in the same instant;
        # both time out in the same loop turn, before the writer's kill lands.
        if isinstance(exc, SendTimeout) and not self.dropped_slow:
            self.dropped_slow = True
            self.listener.stats.incr(st.SLOW_READERS_DROPPED)
            log.info("slow_reader_dropped", send_timeout=self.config.send_timeout)

    # -- reading ------------------------------------------------------------------

    def _recv_timeout(self) -> tuple[float | None, bool]:
        """Seconds to wait for the next bytes, and whether a command is incomplete."""
        config = self.config
        if self.parser.in_progress and config.partial_timeout:
            # The whole command is bounded from its first byte, not each byte.
            return max(0.0, self.command_began + config.partial_timeout - time.monotonic()), True
        return config.idle_timeout or None, False

    def _idle(self) -> bool:
        # Waiting on our own replies or a stream is not idleness.
        return self.pending.empty() and not self.writer_busy

    def _timeout_line(self, partial: bool) -> bytes:
        if partial:
            exc = _Timeout(f"command incomplete after {self.config.partial_timeout:g} s "
                           "(--partial-timeout); closing")
        else:
            exc = _Timeout(f"idle for {self.config.idle_timeout:g} s (--idle-timeout); closing")
        return p.encode_error(exc)

    def _read_loop(self) -> str:
        # Wait for readability, then read: a client that waits for its reply
        # has sent nothing yet when we come back here, so reading first would
        # cost a failed recv and its exception per request (as Redis, epoll first).
        fd = self.sock.fileno()
        readable = gevent.get_hub().loop.io(fd, 1)
        try:
            return self._read_chunks(fd, readable)
        finally:
            readable.close()

    def _read_chunks(self, fd: int, readable: Any) -> str:
        sock, parser, submit = self.sock, self.parser, self.queue.submit
        wait_readable = gevent.get_hub().wait
        timeout = self.config.send_timeout
        while not self.closing:
            wait, partial = self._recv_timeout()
            try:
                if wait is None:
                    wait_readable(readable)
                else:
                    with gevent.Timeout(wait):
                        wait_readable(readable)
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:  # readable, then not (another reader cannot exist: spurious)
                continue
            except gevent.Timeout:
                if not partial and not self._idle():
                    continue
                self.listener.stats.incr(st.TIMEOUTS)
                log.info("connection_timeout", partial=partial)
                self._end_with(self._timeout_line(partial))
                return _ENDING
            except OSError:
                return _BROKEN
            was_in_progress = parser.in_progress
            parser.receive_data(data)
            completed = False
            # Replies that are ready, with nothing queued ahead of them, are sent
            # from here in one write per received chunk; the rest go to the writer.
            out: list[bytes] = []
            try:
                while not self.closing:
                    try:
                        command = parser.next_command()
                    except ProtocolError as exc:
                        self.listener.stats.incr(st.PROTOCOL_ERRORS)
                        log.info("protocol_error", error=exc.message)
                        self._reply(out, _Ready(CloseAfter(p.encode_error(exc))))
                        return _ENDING
                    except ClientError as exc:
                        completed = True
                        self._reply(out, _Ready(p.encode_error(exc)))
                        continue
                    if isinstance(command, p.NeedData):
                        break
                    completed = True
                    if type(command) is p.Ack:
                        # A follower's report: no reply, so no pipeline slot.
                        self._ack(out, command)
                        continue
                    if type(command) is p.Close:
                        # Ends a follow now, instead of queueing behind it forever.
                        self.close_requested.set()
                    self._reply(out, submit(command, self.peer))
            finally:
                if out:
                    if self.listener.stats.tail_readers:
                        gevent.sleep(0)  # tail readers woken by this chunk's commits go first
                    send_all(sock, b"".join(out), timeout)
            if parser.in_progress and (completed or not was_in_progress):
                self.command_began = time.monotonic()
            if not data:
                return _EOF
        return _BROKEN

    def _ack(self, out: list[bytes], ack: p.Ack) -> None:
        follower = self.follower
        if follower is None:
            self._reply(out, _Ready(p.encode_error(InvalidArgument(
                "ACK is only valid on a REPLICATE stream"))))
            return
        follower.written = (ack.partition, ack.offset, ack.id)
        follower.synced = (ack.synced_partition, ack.synced_offset, ack.synced_id)
        follower.last_report = time.time()
        if self.queue.acks is not None:
            self.queue.acks.on_report()

    def _end_with(self, line: bytes) -> None:
        """Queue a last line after every reply due; the writer then closes."""
        if self._idle():
            try:
                send_all(self.sock, line, 1.0)
            except (OSError, SendTimeout):
                pass
            return
        try:
            self.pending.put_nowait(_Ready(CloseAfter(line)))
        except Full:
            pass

    def _reply(self, out: list[bytes], result: Any) -> None:
        """``result``: the reply line itself, or something shaped like an AsyncResult."""
        if not self.writer_busy and self.pending.empty():
            if type(result) is bytes:
                out.append(result)
                return
            if result.ready() and type(result.get()) is bytes:
                out.append(result.get())
                return
        if type(result) is bytes:
            result = _Ready(result)
        if out:
            send_all(self.sock, b"".join(out), self.config.send_timeout)
            out.clear()
        self._enqueue(result)

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
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader, wherever it waits
            except OSError:
                pass
            # A reader blocked on the full pipeline would wait for nobody:
            # wake it, so the connection and its count go now (item 6).
            if self.reader_waiting:
                self.reader.kill(_WriterGone, block=False)

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
            if type(reply) is WaitAcks:
                reply = self._await_acks(reply, out)
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
            elif type(reply) is Replication:
                self._replicate(reply)
            self.writer_busy = False

    def _await_acks(self, wait: WaitAcks, out: list[bytes]) -> bytes:
        """A MSG's reply under --min-acks: the replies before it go out first,
        then this greenlet waits for the followers (acks.py); the queue and
        other connections do not."""
        acks = self.queue.acks
        assert acks is not None
        if out and acks.visible.committed < wait.last:
            send_all(self.sock, b"".join(out), self.config.send_timeout)
            out.clear()
        return acks.wait(wait, self.gone)

    def _replicate(self, rep: Replication) -> None:
        followers = self.queue.handlers.followers
        hello = rep.follower
        self.follower = followers[self.id] = FollowerState(
            self.peer.addr, hello.name if hello else "", fsync=hello.fsync if hello else "",
            counted=hello is not None, advertise=hello.advertise if hello else "",
            lag=functools.partial(lag.measure, self.queue.log, self.queue.commits))
        if hello is not None:
            # What it says it has; its ACKs say more.
            self.follower.written = (rep.partition, rep.offset, rep.next_id - 1)
        # The handler checked that the log has partitions: its cursors are file cursors.
        cursor: Any = self.queue.log.cursor(rep.next_id)
        try:
            stream_replication(self.sock, self.queue.log, cursor, self.queue.commits, rep,
                               self.gone, self.close_requested, self.config.send_timeout)
        except OSError as exc:
            self._open_failed(exc)
        finally:
            cursor.close()
            followers.pop(self.id, None)
            self.follower = None
            log.info("replication_ended")

    def _stream(self, stream: Stream) -> None:
        stats = self.listener.stats
        follow = stream.limit == 0
        config = self.config
        if follow or not self.pending.empty():
            # A tail reader, or a pipeline queued behind this READ: a reader
            # that takes nothing for the send timeout is dropped.
            timeout = config.send_timeout
        else:
            # A bounded READ holds one fd and reads from disk at the reader's
            # pace: a paused reader (logd read | less) waits, bounded only by
            # the idle timeout, as an idle connection is (issue 7, item 18).
            timeout = config.idle_timeout
        if follow:
            stats.tail_readers += 1
        cursor = self.queue.log.cursor(stream.start)  # opens nothing until read
        try:
            stream_records(
                self.sock,
                cursor,
                self.queue.visible,  # under --min-acks, the acknowledged watermark
                stream.limit,
                self.gone,
                self.close_requested if follow else None,
                timeout,
            )
        except OSError as exc:
            self._open_failed(exc)
        finally:
            cursor.close()
            if follow:
                stats.tail_readers -= 1

    def _open_failed(self, exc: OSError) -> None:
        """A stream could not open a partition: say so at this record (or
        frame) boundary rather than close silently (item 7). The stream ends
        here, as at any error line; the connection stays usable.

        Raises:
            OSError: ``exc``, when it is not a lack of file descriptors.
        """
        if exc.errno not in _FD_ERRORS:
            raise exc
        log.warning("stream_open_failed", error=os.strerror(exc.errno or 0))
        send_all(self.sock, p.encode_error(StorageError(
            "cannot open a partition: server is out of file descriptors; retry later")),
            self.config.send_timeout)
