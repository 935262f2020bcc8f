"""The core server over real sockets: protocol, ordering, atomicity, streams, lifecycle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from logd import protocol
from logd.record import encode

from .wire import Wire, records, small_window, wire

pytestmark = pytest.mark.integration


def test_ping_head_msg_read_roundtrip(logd_server):
    srv = logd_server()
    w = wire(srv)
    w.send(b"PING\r\nHEAD\r\n")
    assert w.line() == b"PONG\r\n"
    assert w.line() == b"OK 0\r\n"
    w.cmd("MSG", b"hello", b"wor\r\nld")
    assert w.line() == b"OK 2\r\n"
    w.cmd("READ", 1, 2)
    got = w.read_until(b"+EOF\r\n")
    assert got == b"OK\r\n" + encode(1, b"hello", 1) + encode(2, b"wor\r\nld", 0) + b"+EOF\r\n"
    # The connection takes further commands after a finite READ.
    w.send(b"head\r\n")
    assert w.line() == b"OK 2\r\n"


def test_pipelining_1000_commands_in_one_send(logd_server):
    srv = logd_server()
    w = wire(srv)
    parts = []
    for i in range(1, 1001):
        parts.append(protocol.encode_command("MSG", b"m%d" % i) if i % 2 else b"PING\r\n")
    w.send(b"".join(parts))
    expected = b"".join(b"OK %d\r\n" % ((i + 1) // 2) if i % 2 else b"PONG\r\n" for i in range(1, 1001))
    assert w.read_exact(len(expected)) == expected
    w.cmd("READ", 1, 500)
    got = records(w.read_until(b"+EOF\r\n")[4:])
    assert got == [(i, b"m%d" % (2 * i - 1)) for i in range(1, 501)]


def test_msg_is_atomic_and_ids_have_no_gaps(logd_server):
    srv = logd_server()
    w = wire(srv)
    w.cmd("MSG", b"a")
    assert w.line() == b"OK 1\r\n"
    w.cmd("MSG", b"b", b"", b"c")
    assert w.line().startswith(b"ERR_CLIENT BADREQUEST empty message")
    w.cmd("MSG")
    assert w.line().startswith(b"ERR_CLIENT BADREQUEST")
    w.cmd("MSG", b"d", b"e")
    assert w.line() == b"OK 3\r\n"
    w.cmd("READ", 1, 3)
    assert records(w.read_until(b"+EOF\r\n")[4:]) == [(1, b"a"), (2, b"d"), (3, b"e")]


def test_read_ranges_cross_partition_boundaries(logd_server):
    srv = logd_server("--partition-size", "300", "--index-interval", "64")
    w = wire(srv)
    bodies = [b"message-%03d-" % i + bytes([i % 256]) * (i % 37) for i in range(1, 201)]
    for i in range(0, 200, 7):
        w.cmd("MSG", *bodies[i : i + 7])
        assert w.line() == b"OK %d\r\n" % min(i + 7, 200)
    partitions = sorted(p for p in os.listdir(srv.data_dir) if p.endswith(".log"))
    assert len(partitions) > 10
    for start, limit in [(1, 200), (2, 5), (37, 80), (199, 2), (200, 1), (150, 51), (0, 3)]:
        w.cmd("READ", start, limit)
        got = records(w.read_until(b"+EOF\r\n")[4:])
        first = start or 1
        assert got == [(i, bodies[i - 1]) for i in range(first, first + limit)], (start, limit)


def test_read_waits_for_messages_that_do_not_exist_yet(logd_server):
    srv = logd_server()
    reader, writer = wire(srv), wire(srv)
    writer.cmd("MSG", b"one")
    assert writer.line() == b"OK 1\r\n"
    reader.cmd("READ", 1, 3)
    assert reader.read_until(encode(1, b"one")) == b"OK\r\n" + encode(1, b"one")
    assert reader.nothing_pending()
    writer.cmd("MSG", b"two", b"three", b"four")
    assert writer.line() == b"OK 4\r\n"
    assert reader.read_until(b"+EOF\r\n") == encode(2, b"two", 2) + encode(3, b"three", 1) + b"+EOF\r\n"
    assert reader.nothing_pending()


def test_tail_receives_messages_from_another_connection(logd_server):
    srv = logd_server()
    tail, writer = wire(srv), wire(srv)
    tail.cmd("READ", 1, 0)  # follow from the start of an empty log
    assert tail.read_until(b"OK\r\n") == b"OK\r\n"
    for n in range(1, 51):
        writer.cmd("MSG", b"live %d" % n)
        assert writer.line() == b"OK %d\r\n" % n
    want = b"".join(encode(n, b"live %d" % n) for n in range(1, 51))
    assert tail.read_exact(len(want)) == want
    # CLOSE ends a follow: +EOF, OK, then the server closes.
    tail.send(b"CLOSE\r\n")
    assert tail.read_to_close() == b"+EOF\r\nOK\r\n"


def test_read_start_validation(logd_server):
    srv = logd_server()
    w = wire(srv)
    w.cmd("MSG", b"x", b"y")
    assert w.line() == b"OK 2\r\n"
    w.cmd("READ", 4, 1)
    assert w.line() == b"ERR_CLIENT RANGE start 4 is past the head; valid starts are 1..3 (first=1 head=2)\r\n"
    w.cmd("READ", 3, 1)  # head+1: waits for the next message
    assert w.read_until(b"OK\r\n") == b"OK\r\n"
    assert w.nothing_pending()


BAD_BUT_FRAMED = [
    (b"NOPE\r\n", b"ERR_CLIENT UNKNOWN"),
    (b"MSG 0\r\n", b"ERR_CLIENT BADREQUEST"),
    (b"MSG 1\r\n0 \r\n", b"ERR_CLIENT BADREQUEST"),
    (b"READ\r\n", b"ERR_CLIENT BADREQUEST"),
    (b"READ 1\r\n2 -1\r\n", b"ERR_CLIENT BADREQUEST"),
    (b"READ 1\r\n3 abc\r\n", b"ERR_CLIENT BADREQUEST"),
    (b"READ 3\r\n1 1\r\n1 1\r\n1 1\r\n", b"ERR_CLIENT BADREQUEST"),
    (b"HEAD 1\r\n1 x\r\n", b"ERR_CLIENT BADREQUEST"),
    (b"STATS 1\r\n4 json\r\n", b"ERR_CLIENT BADREQUEST"),
    (b"READ 1\r\n25 9999999999999999999999999\r\n", b"ERR_CLIENT BADREQUEST"),
]


@pytest.mark.parametrize("request_bytes,reply", BAD_BUT_FRAMED)
def test_bad_request_keeps_connection_usable(logd_server, request_bytes, reply):
    srv = logd_server()
    w = wire(srv)
    w.send(request_bytes + b"PING\r\n")
    assert w.line().startswith(reply + b" ")
    assert w.line() == b"PONG\r\n"
    w.cmd("HEAD")
    assert w.line() == b"OK 0\r\n"  # nothing was written


FRAMING_ERRORS = [
    b"MSG 1\r\nx\r\n",
    b"READ 1\r\nREAD 1 1\r\n",
    b"MSG 1\r\nabc hello\r\n",
    b"MSG 1\r\n3 hello\r\n",
    b"MSG 1\r\n5 hello\n",
    b"X" * 2000 + b"\r\n",
    b"MSG 20000\r\n",
    b"MSG 1\r\n2000000 ",
]


@pytest.mark.parametrize("request_bytes", FRAMING_ERRORS)
def test_framing_error_replies_then_closes_and_server_keeps_serving(logd_server, request_bytes):
    srv = logd_server("--max-args", "10000", "--max-message", "1MiB")
    w = wire(srv)
    w.send(request_bytes)
    reply = w.read_to_close()
    assert reply.startswith(b"ERR_CLIENT PROTOCOL ") and reply.endswith(b"\r\n")
    assert reply.count(b"\r\n") == 1
    other = wire(srv)
    other.send(b"PING\r\nHEAD\r\n")
    assert other.read_exact(12) == b"PONG\r\nOK 0\r\n"


def test_request_limit_and_message_limit(logd_server):
    srv = logd_server("--max-message", "100", "--max-request", "250", "--max-args", "3")
    w = wire(srv)
    w.cmd("MSG", b"a" * 100, b"b" * 100)
    assert w.line() == b"OK 2\r\n"
    w.cmd("MSG", b"a" * 101)
    assert w.read_to_close().startswith(b"ERR_CLIENT PROTOCOL argument of 101 bytes")
    w = wire(srv)
    w.cmd("MSG", b"a" * 100, b"b" * 100, b"c" * 100)
    assert w.read_to_close().startswith(b"ERR_CLIENT PROTOCOL request exceeds")
    w = wire(srv)
    w.cmd("MSG", b"a", b"b", b"c", b"d")
    assert w.read_to_close().startswith(b"ERR_CLIENT PROTOCOL too many arguments")
    w = wire(srv)
    w.cmd("HEAD")
    assert w.line() == b"OK 2\r\n"


def test_partial_command_timeout_closes_slowloris(logd_server):
    srv = logd_server("--partial-timeout", "0.5")
    w = wire(srv)
    w.send(b"MSG 1\r\n5 he")
    began = time.monotonic()
    assert w.read_to_close(timeout=10).startswith(b"ERR_CLIENT TIMEOUT command incomplete after 0.5 s")
    assert time.monotonic() - began < 9
    assert srv.wait_event("connection_timeout")["partial"] is True
    other = wire(srv)
    other.cmd("HEAD")
    assert other.line() == b"OK 0\r\n"


def test_idle_timeout(logd_server):
    srv = logd_server("--idle-timeout", "0.5")
    w = wire(srv)
    w.send(b"PING\r\n")
    assert w.line() == b"PONG\r\n"
    assert w.read_to_close(timeout=10) == b"ERR_CLIENT TIMEOUT idle for 0.5 s (--idle-timeout); closing\r\n"
    other = wire(srv)
    other.send(b"PING\r\n")
    assert other.line() == b"PONG\r\n"


def test_max_clients_gets_an_error_line(logd_server):
    srv = logd_server("--max-clients", "2")
    a, b = wire(srv), wire(srv)
    a.send(b"PING\r\n")
    b.send(b"PING\r\n")
    assert a.line() == b"PONG\r\n" and b.line() == b"PONG\r\n"
    c = wire(srv)
    assert c.read_to_close() == b"ERR MAXCLIENTS max number of clients reached\r\n"
    a.close()
    replies = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(replies) < 200:  # the slot frees once the server sees the close
        d = wire(srv)
        d.send(b"PING\r\n")
        replies.append(d.line())
        if replies[-1] == b"PONG\r\n":
            break
    assert replies[-1] == b"PONG\r\n", replies[-3:]


def test_restart_continues_ids(logd_server):
    srv = logd_server("--partition-size", "200")
    w = wire(srv)
    for i in range(1, 21):
        w.cmd("MSG", b"before-%d" % i)
        assert w.line() == b"OK %d\r\n" % i
    w.close()
    assert srv.stop() == 0
    assert (srv.data_dir / "clean-shutdown").exists()
    srv.start()
    w = wire(srv)
    w.cmd("HEAD")
    assert w.line() == b"OK 20\r\n"
    w.cmd("MSG", b"after")
    assert w.line() == b"OK 21\r\n"
    w.cmd("READ", 19, 3)
    assert records(w.read_until(b"+EOF\r\n")[4:]) == [(19, b"before-19"), (20, b"before-20"), (21, b"after")]


def test_restart_after_kill_truncates_torn_tail(logd_server):
    srv = logd_server()
    w = wire(srv)
    w.cmd("MSG", b"one", b"two")
    assert w.line() == b"OK 2\r\n"
    srv.kill()
    (log_file,) = [p for p in srv.data_dir.iterdir() if p.suffix == ".log"]
    intact = log_file.read_bytes()
    with open(log_file, "ab") as f:
        f.write(encode(3, b"three")[:-4])  # a torn third record
    srv.start()
    event = srv.wait_event("tail_truncated")
    assert event["bytes_dropped"] == len(encode(3, b"three")) - 4
    assert log_file.read_bytes() == intact
    w = wire(srv)
    w.cmd("MSG", b"three")
    assert w.line() == b"OK 3\r\n"


def test_stats_text_and_msgpack(logd_server):
    srv = logd_server()
    w = wire(srv)
    w.cmd("MSG", b"a", b"b", b"c")
    assert w.line() == b"OK 3\r\n"
    w.send(b"STATS\r\n")
    header = w.line()
    assert header.startswith(b"OK ")
    body = w.read_exact(int(header[3:-2]) + 2)[:-2].decode()
    fields = dict(line.split(": ", 1) for line in body.splitlines())
    assert fields["head"] == "3" and fields["first_id"] == "1"
    assert fields["fsync_policy"] == "always"
    assert int(fields["fsyncs"]) >= 1 and fields["connections"] == "1"
    assert fields["cmd_msg"] == "1"
    data = w.stats()
    assert data["head"] == 3 and data["partitions"] == 1 and data["cmd_stats"] == 1
    assert data["messages_written"] == 3 and data["bytes_written"] == 3


def test_unix_socket_listener_shares_the_queue(logd_server, tmp_path):
    path = str(tmp_path / "logd.sock")
    srv = logd_server("--unix", path)
    srv.wait_event("listening")
    tcp, unix = wire(srv), Wire(path)
    tcp.cmd("MSG", b"via tcp")
    assert tcp.line() == b"OK 1\r\n"
    unix.cmd("MSG", b"via unix")
    assert unix.line() == b"OK 2\r\n"
    unix.cmd("READ", 1, 2)
    assert records(unix.read_until(b"+EOF\r\n")[4:]) == [(1, b"via tcp"), (2, b"via unix")]
    unix.send(b"SHUTDOWN\r\n")  # a unix peer is local
    assert unix.line() == b"OK\r\n"
    assert srv.proc.wait(20) == 0
    assert not os.path.exists(path)


def test_shutdown_command_answers_in_flight_and_exits_0(logd_server):
    srv = logd_server()
    tail = wire(srv)
    tail.cmd("READ", 1, 0)
    assert tail.line() == b"OK\r\n"
    w = wire(srv)
    w.send(protocol.encode_command("MSG", b"last") + b"SHUTDOWN\r\n")
    assert w.line() == b"OK 1\r\n"
    assert w.line() == b"OK\r\n"
    assert srv.proc.wait(20) == 0
    assert tail.read_to_close() == encode(1, b"last") + b"ERR SHUTDOWN server is shutting down\r\n"
    assert (srv.data_dir / "clean-shutdown").exists()
    srv.start()
    w = wire(srv)
    w.cmd("HEAD")
    assert w.line() == b"OK 1\r\n"


def test_sigterm_is_graceful(logd_server):
    srv = logd_server()
    w = wire(srv)
    w.cmd("MSG", b"x")
    assert w.line() == b"OK 1\r\n"
    idle = wire(srv)
    assert srv.stop(signal.SIGTERM) == 0
    assert srv.events("shutdown_complete")
    assert idle.read_to_close() == b""
    assert (srv.data_dir / "clean-shutdown").exists()


def test_slow_reader_is_dropped_without_blocking_writers(logd_server):
    srv = logd_server("--send-timeout", "1")
    slow = small_window(srv)
    slow.sendall(b"READ 1\r\n1 0\r\n")  # follow, then never read
    w = wire(srv)
    body = b"z" * 60000
    for i in range(1, 201):  # ~12 MB: far more than the socket buffers hold
        w.cmd("MSG", body)
        assert w.line() == b"OK %d\r\n" % i
    srv.wait_event("slow_reader_dropped", timeout=20)
    assert w.stats()["slow_readers_dropped"] == 1
    slow.close()


def test_config_file_and_flags(logd_server, tmp_path):
    conf = tmp_path / "logd.toml"
    conf.write_text('fsync = "interval:50"\npartition_size = "1KiB"\nmax_clients = 5\n')
    srv = logd_server("--config", str(conf), "--max-clients", "7")
    assert wire(srv).stats()["fsync_policy"] == "interval:50"


def test_bad_config_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "logd", "serve", "--fsync", "sometimes",
                           "--data-dir", str(tmp_path)], capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"fsync policy" in proc.stderr
