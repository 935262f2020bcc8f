"""Connections that misbehave or end oddly (issue 7): half-closes, slowloris,
clients that never read, running out of file descriptors, paused readers, and
commands typed by hand. Each bad case ends with a PING that is answered."""

from __future__ import annotations

import resource
import socket
import struct
import time

import pytest

from logd import protocol
from logd.record import encode

from .wire import Wire, records, small_window, wire

pytestmark = pytest.mark.integration


def assert_serves(server, deadline: float = 10.0) -> None:
    """A new client gets PONG (retrying while the server frees a slot)."""
    end = time.monotonic() + deadline
    got = b""
    for _ in range(500):
        try:
            w = wire(server, timeout=2)
            w.send(b"PING\r\n")
            got = w.line()
            w.close()
        except (AssertionError, OSError) as exc:
            got = repr(exc).encode()
        if got == b"PONG\r\n" or time.monotonic() > end:
            break
        time.sleep(0.05)
    assert got == b"PONG\r\n"


def stats(server) -> dict:
    """STATS over a connection of its own (not for a server at --max-clients)."""
    w = wire(server)
    try:
        return w.stats()
    finally:
        w.close()


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    end = time.monotonic() + timeout
    last = None
    for _ in range(2000):
        last = predicate()
        if last:
            return last
        if time.monotonic() > end:
            break
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s (last: {last!r})")


def write(server, *bodies: bytes) -> None:
    w = wire(server)
    w.cmd("MSG", *bodies)
    assert w.line().startswith(b"OK ")
    w.close()


# -- item 4: half-closed connections ------------------------------------------------


def test_bounded_read_on_a_half_closed_connection_gets_every_record(logd_server):
    srv = logd_server()
    write(srv, b"one", b"two", b"three")
    w = wire(srv)
    w.send(b"READ 2\r\n1 1\r\n1 3\r\n")  # what `printf ... | nc -N` sends
    w.sock.shutdown(socket.SHUT_WR)
    assert w.read_to_close() == (b"OK\r\n" + encode(1, b"one", 2) + encode(2, b"two", 1)
                                 + encode(3, b"three", 0) + b"+EOF\r\n")
    assert_serves(srv)


def test_replies_after_a_read_come_after_its_stream_on_half_close(logd_server):
    srv = logd_server()
    write(srv, b"a", b"b")
    w = wire(srv)
    w.send(b"READ 2\r\n1 1\r\n1 2\r\nPING\r\nHEAD\r\n")
    w.sock.shutdown(socket.SHUT_WR)
    assert w.read_to_close() == (b"OK\r\n" + encode(1, b"a", 1) + encode(2, b"b", 0)
                                 + b"+EOF\r\nPONG\r\nOK 2\r\n")
    assert_serves(srv)


def _half_closed_follower(srv, first: bytes) -> Wire:
    """A follow from id 1 whose sending side is closed, past its first record."""
    write(srv, first)
    w = wire(srv)
    w.send(b"READ 1 0\r\n")
    w.sock.shutdown(socket.SHUT_WR)  # nc -N: stdin ended, the output still matters
    assert w.read_until(encode(1, first)) == b"OK\r\n" + encode(1, first)
    return w


def test_follow_on_a_half_closed_connection_keeps_following(logd_server):
    srv = logd_server()
    w = _half_closed_follower(srv, b"old")
    write(srv, b"new")
    assert w.read_until(encode(2, b"new")) == encode(2, b"new")
    assert stats(srv)["tail_readers"] == 1
    w.close()  # the peer really goes: the next record finds that out
    write(srv, b"newer")
    wait_for(lambda: stats(srv)["tail_readers"] == 0, what="tail reader released")
    assert_serves(srv)


def test_half_closed_follow_ends_with_err_shutdown_on_sigterm(logd_server):
    srv = logd_server()
    w = _half_closed_follower(srv, b"one")
    assert srv.stop() == 0
    assert w.read_to_close() == b"ERR SHUTDOWN server is shutting down\r\n"


# -- item 5: slowloris and timeouts -----------------------------------------------


def test_partial_timeout_bounds_the_whole_command_not_each_byte(logd_server):
    srv = logd_server("--partial-timeout", "1")
    w = wire(srv)
    began = time.monotonic()
    request = b"MSG 1\r\n100 " + b"x" * 100
    closed = b""
    for i in range(len(request)):  # one byte every 0.1 s: 11 s to send it all
        try:
            w.send(request[i : i + 1])
        except OSError:  # closed already: what came before the close still counts
            closed = w.buf
            break
        if not w.nothing_pending(0.1):
            closed = w.read_to_close()
            break
    elapsed = time.monotonic() - began
    assert closed.startswith(b"ERR_CLIENT TIMEOUT command incomplete after 1 s (--partial-timeout)")
    assert elapsed < 4, elapsed
    assert_serves(srv)


# -- item 6: clients that never read ------------------------------------------------


def _never_reads(server, request: bytes) -> socket.socket:
    s = small_window(server)
    try:
        s.sendall(request)
    except (socket.timeout, OSError):
        pass  # the server stopped reading us: the pipeline is full
    return s


def _reset(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST, not FIN


def _peer(s: socket.socket) -> str:
    host, port = s.getsockname()[:2]
    return f"{host}:{port}"


def test_clients_that_pipeline_and_never_read_are_dropped_and_free_their_slot(logd_server):
    # One connection, opened first and kept, does every write and STATS: a
    # closed connection's slot frees only once the server has seen the close,
    # so a helper connection that came and went could still hold a slot when
    # the next client arrives, and that client would be turned away.
    srv = logd_server("--max-clients", "4", "--send-timeout", "1", "--fsync", "never")
    watch = wire(srv, timeout=20)
    body = b"r" * 1000
    for _ in range(4):
        watch.cmd("MSG", *[body] * 500)
        assert watch.line().startswith(b"OK ")
    reads = protocol.encode_command("READ", 1, 2000) * 3000
    statses = b"STATS\r\n" * 200000
    _reset(_never_reads(srv, reads))  # at once, long before the send timeout: a reset, not a slow reader
    sitting = [_never_reads(srv, reads), _never_reads(srv, statses)]  # these just sit there
    slow_peers = sorted(_peer(s) for s in sitting)
    # All four slots were taken (the watch and three clients), none turned away.
    wait_for(lambda: watch.stats()["connections_total"] == 4, what="the three clients accepted")
    assert watch.stats()["connections_rejected"] == 0
    watch.send(b"PING\r\n")  # the server keeps serving others meanwhile
    assert watch.line() == b"PONG\r\n"
    began = time.monotonic()
    assert_serves(srv, deadline=20)  # a fifth client gets a slot a bad one gave back
    assert time.monotonic() - began < 15
    wait_for(lambda: watch.stats()["connections"] == 1, what="every other connection gone")
    # Each client that stopped reading is dropped once, by the send timeout;
    # the one that reset is not a slow reader.
    assert watch.stats()["slow_readers_dropped"] == 2
    wait_for(lambda: len(srv.events("slow_reader_dropped")) == 2, what="two slow_reader_dropped lines")
    assert sorted(e["peer"] for e in srv.events("slow_reader_dropped")) == slow_peers
    # Every slot came back: three fresh clients at once, and a fourth is one too many.
    fresh = [wire(srv) for _ in range(3)]
    for w in fresh:
        w.send(b"PING\r\n")
    assert [w.line() for w in fresh] == [b"PONG\r\n"] * 3
    extra = wire(srv)
    assert extra.read_to_close() == b"ERR MAXCLIENTS max number of clients reached\r\n"
    for s in [*fresh, extra, *sitting]:
        s.close()
    assert_serves(srv)


def test_a_reader_that_pipelines_and_never_reads_is_counted_once(logd_server):
    # Its writer (full socket) and its reader (full pipeline) both time out.
    srv = logd_server("--send-timeout", "1", "--fsync", "never")
    watch = wire(srv, timeout=20)
    for _ in range(4):
        watch.cmd("MSG", *[b"r" * 1000] * 500)
        assert watch.line().startswith(b"OK ")
    slow = _never_reads(srv, protocol.encode_command("READ", 1, 2000) * 3000)
    wait_for(lambda: watch.stats()["connections_total"] == 2, what="the reader accepted")
    wait_for(lambda: watch.stats()["connections"] == 1, what="the reader dropped")
    assert watch.stats()["slow_readers_dropped"] == 1
    wait_for(lambda: srv.events("slow_reader_dropped"), what="a slow_reader_dropped line")
    assert [e["peer"] for e in srv.events("slow_reader_dropped")] == [_peer(slow)]
    slow.close()


# -- item 7: file descriptors ---------------------------------------------------------


def test_soft_fd_limit_is_raised_toward_the_hard_limit(logd_server):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 400:
        pytest.skip(f"hard fd limit {hard} too low for this test")
    srv = logd_server("--max-clients", "300", nofile=(100, hard))
    got_soft, got_hard = resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE)
    assert got_soft >= 300 + 64 and got_hard == hard
    assert not srv.events("fd_limit_low")


def test_out_of_fds_warns_at_start_errors_new_clients_and_keeps_serving(logd_server):
    srv = logd_server("--max-clients", "200", nofile=(48, 48))
    warning = srv.wait_event("fd_limit_low")
    assert warning["max_clients"] == 200 and warning["soft"] == 48
    held = []
    refused = b""
    for _ in range(80):  # more connections than descriptors
        w = wire(srv, timeout=5)
        w.send(b"PING\r\n")
        reply = w.line()
        held.append(w)
        if reply != b"PONG\r\n":
            refused = reply
            break
    assert refused == b"ERR MAXCLIENTS server is out of file descriptors; try later\r\n"
    srv.wait_event("accept_failed")
    for w in held:
        w.close()
    assert_serves(srv)
    assert not [e for e in srv.logs if "Traceback" in str(e) or e.get("exc_info")]
    assert len(srv.events("accept_failed")) <= 2  # once per interval, not per accept


def test_read_that_cannot_open_a_partition_gets_an_error_line(logd_server):
    srv = logd_server("--partition-size", "200", "--fsync", "never", nofile=(48, 48))
    for i in range(20):
        write(srv, b"x" * 60, b"y" * 60)
    reader = wire(srv)
    reader.send(b"PING\r\n")
    assert reader.line() == b"PONG\r\n"
    held = []
    for _ in range(80):
        w = wire(srv, timeout=5)
        w.send(b"PING\r\n")
        reply = w.line()
        held.append(w)
        if reply != b"PONG\r\n":
            break
    reader.cmd("READ", 1, 40)
    got = reader.read_until(b"\r\n", timeout=10)
    rest = reader.read_until(b"\r\n", timeout=10)
    for _ in range(40):  # records before the error line, if any: at most the 40 asked for
        if not rest.startswith(b"+") or b"EOF" in rest:
            break
        reader.read_until(b"\r\n")  # the body
        rest = reader.read_until(b"\r\n")
    assert got == b"OK\r\n"
    assert rest.startswith(b"ERR STORAGE cannot open a partition: server is out of file descriptors")
    reader.send(b"PING\r\n")  # the stream ended; the connection did not
    assert reader.line() == b"PONG\r\n"
    for w in held:
        w.close()
    assert_serves(srv)


# -- item 18: paused readers ------------------------------------------------------------


def test_bounded_read_waits_for_a_paused_reader_but_a_tail_reader_is_dropped(logd_server):
    srv = logd_server("--send-timeout", "1", "--fsync", "never")
    body = b"p" * 4000
    for _ in range(10):
        write(srv, *[body] * 200)  # 8 MB: far more than the socket buffers hold
    paused = small_window(srv)
    paused.sendall(b"READ 2\r\n1 1\r\n4 2000\r\n")  # logd read -n 2000 | less
    tail = small_window(srv)
    tail.sendall(b"READ 2\r\n1 1\r\n1 0\r\n")  # logd read -f | less
    srv.wait_event("slow_reader_dropped", timeout=15)
    time.sleep(1.5)  # a negative check: the paused bounded READ outlives the send timeout
    assert stats(srv)["slow_readers_dropped"] == 1
    # The reader comes back: every record arrives, then +EOF.
    data = Wire.adopt(paused, timeout=30).read_until(b"+EOF\r\n")  # fails if it was dropped
    assert data.startswith(b"OK\r\n")
    assert [i for i, _ in records(data[4:])] == list(range(1, 2001))
    tail.close()
    paused.close()
    assert_serves(srv)


def test_sigterm_does_not_wait_forever_for_a_paused_bounded_reader(logd_server):
    srv = logd_server("--fsync", "never", "--shutdown-timeout", "1")
    for _ in range(5):
        write(srv, *[b"q" * 4000] * 200)
    paused = small_window(srv)
    paused.sendall(b"READ 1 1000\n")
    wait_for(lambda: stats(srv).get("cmd_read") == 1, what="READ started")
    began = time.monotonic()
    assert srv.stop(timeout=15) == 0
    assert time.monotonic() - began < 10
    paused.close()


def test_stats_names_version_pid_data_dir_and_listen_address(logd_server, tmp_path):
    import logd

    path = str(tmp_path / "s.sock")
    srv = logd_server("--unix", path)
    data = stats(srv)
    assert data["version"] == logd.__version__
    assert data["pid"] == srv.proc.pid
    assert data["data_dir"] == str(srv.data_dir.resolve())
    assert data["listen"].split() == [f"127.0.0.1:{srv.port}", path]


# -- items 13, 14: typed by hand ----------------------------------------------------------


def test_lf_line_endings_and_inline_arguments_are_answered_at_once(logd_server):
    srv = logd_server()
    w = wire(srv, timeout=3)  # far below the 30 s partial timeout
    w.send(b"PING\n")
    assert w.line() == b"PONG\r\n"
    w.send(b"MSG hello world\nSTATS msgpack\n")
    assert w.line() == b"OK 2\r\n"
    assert w.line().startswith(b"OK ")
    w.buf = b""
    w.send(b"READ 1 2\n")
    assert records(w.read_until(b"+EOF\r\n")[4:]) == [(1, b"hello"), (2, b"world")]
    w.send(b"PING too many\n")
    assert w.line() == b"ERR_CLIENT BADREQUEST PING takes no arguments\r\n"
    w.send(b"MSG 1\n5 hello\n")  # framed arguments still end in CRLF: say how
    reply = w.read_to_close()
    assert reply.startswith(b"ERR_CLIENT PROTOCOL argument not followed by CRLF") and b"nc without -C" in reply
    assert_serves(srv)
