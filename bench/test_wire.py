"""Checks of the load generator's codecs (not part of the pytest suite; no timing).

Run: ``python -m pytest bench/test_wire.py -q``. The last tests start a real
redis-server and logd server and are skipped when either is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from zlib import crc32

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import wire  # noqa: E402
from wire import LogdCodec, RedisCodec, ReplyError  # noqa: E402

from tests.chunkers import bytewise, random_chunks  # noqa: E402


def chunkings(data: bytes, seed: int = 1):
    """The same bytes whole, byte by byte, and in random chunks."""
    yield [data]
    yield list(bytewise(data))
    yield list(random_chunks(data, seed, largest=40))


def drive(reader, chunks):
    """Feed chunks like Conn does; return (bodies, requests sent after the first, done)."""
    buf = bytearray()
    pos = 0
    bodies: list = []
    requests = []
    done = False
    for c in chunks:
        buf += c
        pos, n, nxt, done = reader.feed(buf, pos, bodies)
        if nxt is not None:
            requests.append(nxt)
        if done:
            break
    return bodies, requests, done


def record(i: int, body: bytes, more: int = 0) -> bytes:
    head = b"%d %d %d" % (i, len(body), more)
    return b"+%s %08x\r\n%s\r\n" % (head, crc32(body, crc32(head)), body)


# -- logd ----------------------------------------------------------------------


def test_logd_encode_write_is_understood_by_logd_parser():
    protocol = pytest.importorskip("logd.protocol")
    bodies = [b"hello", b"a\r\nb c d", bytes(range(256))]
    p = protocol.CommandParser()
    p.receive_data(LogdCodec.encode_write(bodies))
    assert p.next_command() == protocol.Msg(tuple(bodies))
    assert p.next_command() is protocol.NEED_DATA


def test_logd_read_request_is_understood_by_logd_parser():
    protocol = pytest.importorskip("logd.protocol")
    p = protocol.CommandParser()
    p.receive_data(LogdCodec.range_reader(1000).first_request() + LogdCodec.tail_reader(41).first_request())
    assert p.next_command() == protocol.Read(1, 1000)
    assert p.next_command() == protocol.Read(42, 0)
    p.receive_data(LogdCodec.head_request())
    assert p.next_command() == protocol.Head()


def test_logd_record_format_matches_logd_record_module():
    rec = pytest.importorskip("logd.record")
    assert record(7, b"hello\r\nx") == rec.encode(7, b"hello\r\nx")
    assert record(7, b"hello", 3) == rec.encode(7, b"hello", 3)
    data, _ = rec.encode_batch(1, [b"a", b"bc", b"d"])
    got, _, _ = drive(LogdCodec.range_reader(3), [b"OK\r\n" + data + b"+EOF\r\n"])
    assert got == [b"a", b"bc", b"d"]


def test_logd_parse_reply():
    buf = bytearray(b"OK 100\r\nOK 2")
    assert LogdCodec.parse_reply(buf, 0) == 8
    assert LogdCodec.parse_reply(buf, 8) == -1
    with pytest.raises(ReplyError, match="DISKFULL"):
        LogdCodec.parse_reply(bytearray(b"ERR DISKFULL no space\r\n"), 0)


def test_logd_parse_head():
    assert LogdCodec.parse_head(bytearray(b"OK 0\r\n"), 0) == (6, 0)
    assert LogdCodec.parse_head(bytearray(b"OK 12"), 0) == (-1, None)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_logd_range_reader(which):
    bodies = [b"m%d" % i + b"\r\n" * (i % 3) for i in range(1, 51)]
    data = b"OK\r\n" + b"".join(record(i, b, (10 - i) % 10) for i, b in enumerate(bodies, 1)) + b"+EOF\r\n"
    chunks = list(chunkings(data))[which]
    got, requests, done = drive(LogdCodec.range_reader(50), chunks)
    assert done and got == bodies and requests == []


def test_logd_reader_rejects_bad_checksum_gap_and_error():
    good = record(1, b"abc")
    bad = good.replace(b"abc", b"abd")
    with pytest.raises(ReplyError, match="checksum"):
        drive(LogdCodec.range_reader(1), [b"OK\r\n" + bad])
    with pytest.raises(ReplyError, match="where 1 was due"):
        drive(LogdCodec.range_reader(1), [b"OK\r\n" + record(2, b"abc")])
    with pytest.raises(ReplyError, match="RANGE"):
        drive(LogdCodec.range_reader(1), [b"ERR_CLIENT RANGE start past head+1 (first=1 head=0)\r\n"])
    with pytest.raises(ReplyError, match="SHUTDOWN"):
        drive(LogdCodec.range_reader(2), [b"OK\r\n" + good + b"ERR SHUTDOWN bye\r\n"])


def test_logd_tail_reader_never_done():
    data = b"OK\r\n" + record(5, b"x") + record(6, b"y")
    for chunks in chunkings(data):
        got, _, done = drive(LogdCodec.tail_reader(4), chunks)
        assert got == [b"x", b"y"] and not done


# -- Redis -----------------------------------------------------------------------


def resp_bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def resp_entry(eid: bytes, fields: list[bytes]) -> bytes:
    return b"*2\r\n" + resp_bulk(eid) + b"*%d\r\n" % len(fields) + b"".join(resp_bulk(f) for f in fields)


def test_redis_encode_write():
    assert RedisCodec.encode_write([b"hi", b"a\r\nb"]) == (
        b"*5\r\n$4\r\nXADD\r\n$5\r\nbench\r\n$1\r\n*\r\n$1\r\nd\r\n$2\r\nhi\r\n"
        b"*5\r\n$4\r\nXADD\r\n$5\r\nbench\r\n$1\r\n*\r\n$1\r\nd\r\n$4\r\na\r\nb\r\n"
    )
    assert RedisCodec.replies_per_write(100) == 100


def test_redis_parse_reply():
    buf = bytearray(b"$15\r\n1764000000000-0\r\n$15\r\n1764000000000-1\r")
    p = RedisCodec.parse_reply(buf, 0)
    assert p == 22
    assert RedisCodec.parse_reply(buf, p) == -1
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        RedisCodec.parse_reply(bytearray(b"-WRONGTYPE Operation against a key\r\n"), 0)


def test_redis_parse_head():
    assert RedisCodec.parse_head(bytearray(b"*0\r\n"), 0) == (4, b"0-0")
    data = b"*1\r\n" + resp_entry(b"5-1", [b"d", b"xyz"])
    assert RedisCodec.parse_head(bytearray(data), 0) == (len(data), b"5-1")
    assert RedisCodec.parse_head(bytearray(data[:-1]), 0) == (-1, None)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_redis_range_reader_pages(which, monkeypatch):
    monkeypatch.setattr(wire, "PAGE", 3)
    bodies = [b"m%d" % i + b"\r\n" * (i % 3) for i in range(7)]
    ids = [b"100-%d" % i for i in range(7)]
    reader = RedisCodec.range_reader(7)
    assert reader.first_request() == wire.resp_command(b"XRANGE", b"bench", b"-", b"+", b"COUNT", b"3")
    got_all = []
    requests_all = []
    for start in (0, 3, 6):
        page = ids[start : start + 3]
        # one entry in the other shape (extra field) to exercise the general path
        ents = [resp_entry(e, [b"d", bodies[ids.index(e)]] + ([b"x", b"1"] if e == b"100-4" else [])) for e in page]
        data = b"*%d\r\n" % len(page) + b"".join(ents)
        chunks = list(chunkings(data, seed=start))[which]
        got, requests, done = drive(reader, chunks)
        got_all += got
        requests_all += requests
    assert got_all == bodies
    assert done
    assert requests_all == [
        wire.resp_command(b"XRANGE", b"bench", b"(100-2", b"+", b"COUNT", b"3"),
        wire.resp_command(b"XRANGE", b"bench", b"(100-5", b"+", b"COUNT", b"1"),
    ]


def test_redis_range_reader_stops_on_empty_page():
    reader = RedisCodec.range_reader(10)
    reader.first_request()
    got, requests, done = drive(reader, [b"*0\r\n"])
    assert done and got == [] and requests == []


def test_redis_tail_reader():
    reader = RedisCodec.tail_reader(b"9-0")
    assert reader.first_request() == wire.resp_command(b"XREAD", b"BLOCK", b"0", b"STREAMS", b"bench", b"9-0")
    reply = b"*1\r\n*2\r\n$5\r\nbench\r\n*2\r\n" + resp_entry(b"10-0", [b"d", b"a"]) + resp_entry(b"10-1", [b"d", b"b"])
    for chunks in chunkings(reply):
        reader = RedisCodec.tail_reader(b"9-0")
        got, requests, done = drive(reader, chunks)
        assert got == [b"a", b"b"] and not done
        assert requests == [wire.resp_command(b"XREAD", b"BLOCK", b"0", b"STREAMS", b"bench", b"10-1")]


def test_redis_error_inside_page():
    reader = RedisCodec.range_reader(5)
    with pytest.raises(ReplyError, match="ERR"):
        drive(reader, [b"-ERR something\r\n"])


# -- against real servers (skipped when missing) -------------------------------------


def _roundtrip(server, codec, n: int = 250):
    import workloads

    r = workloads.write_loop(server.port, server.system, n // 50, 50, 3, None, timeout=60)
    assert r["msgs"] == n
    r = workloads.read_all(server.port, server.system, n, timeout=60)
    assert r["msgs"] == n
    r = workloads.read_all(server.port, server.system, n, timeout=60, raw=True)
    assert r["msgs"] == n
    lat: list = []
    workloads.write_loop(server.port, server.system, 20, 1, 1, lat, timeout=60)
    assert len(lat) == 20
    r = workloads.concurrent_writers(server.port, server.system, 4, 2, 0.3)
    assert r["msgs"] > 0
    r = workloads.tail_latency(server.port, server.system, 500, 0.5)
    assert r["received"] == r["sent"] == 250


def test_against_redis(tmp_path):
    import servers

    try:
        servers.redis_binary(install=False)
    except servers.ServerError:
        pytest.skip("redis-server not installed")
    with servers.RedisServer("interval", str(tmp_path)) as s:
        _roundtrip(s, RedisCodec)
    assert not Path(s.dir).exists()


def test_against_logd(tmp_path):
    pytest.importorskip("logd.cli")
    import servers

    with servers.LogdServer("interval", str(tmp_path)) as s:
        _roundtrip(s, LogdCodec)
    assert s.exit_code == 0
    assert not Path(s.dir).exists()


# -- transport-only readers ------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1, 2])
def test_raw_logd_reader_counts_records(which):
    body = b"logd-bench-" * 9 + b"x"
    data = b"OK\r\n" + b"".join(record(i, body, (100 - i) % 100) for i in range(1, 301)) + b"+EOF\r\n"
    reader = wire.RawLogdReader(300)
    buf = bytearray()
    pos = total = 0
    done = False
    for c in list(chunkings(data, seed=7))[which]:
        buf += c
        pos, n, _nxt, done = reader.feed(buf, pos, None)
        total += n
        if done:
            break
    assert done and total == 300


@pytest.mark.parametrize("which", [0, 1, 2])
def test_raw_redis_reader_pages(which, monkeypatch):
    monkeypatch.setattr(wire, "PAGE", 4)
    body = b"logd-bench-" * 9 + b"x"
    reader = wire.RawRedisRangeReader(10)
    assert reader.first_request().endswith(b"$5\r\nCOUNT\r\n$1\r\n4\r\n")
    total = 0
    requests = []
    for start, n in ((0, 4), (4, 4), (8, 2)):
        data = b"*%d\r\n" % n + b"".join(resp_entry(b"77-%d" % i, [b"d", body]) for i in range(start, start + n))
        buf = bytearray()
        pos = 0
        for c in list(chunkings(data, seed=start))[which]:
            buf += c
            pos, k, nxt, done = reader.feed(buf, pos, None)
            total += k
            if nxt is not None:
                requests.append(nxt)
    assert done and total == 10
    assert requests == [
        wire.resp_command(b"XRANGE", b"bench", b"(77-3", b"+", b"COUNT", b"4"),
        wire.resp_command(b"XRANGE", b"bench", b"(77-7", b"+", b"COUNT", b"2"),
    ]


def test_floor_answers_msgs_in_order(tmp_path):
    """bench/floor.py stands in for logd under W2/W3: each MSG gets the next id."""
    import socket

    import servers
    import workloads

    floor = Path(__file__).with_name("floor.py")
    with servers.LogdServer("interval", str(tmp_path), cmd=f"{sys.executable} {floor}") as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(LogdCodec.encode_write([b"a"]) * 3)
            got = b""
            while got.count(b"\r\n") < 3:
                chunk = c.recv(100)
                assert chunk, "floor.py closed the connection"
                got += chunk
        assert got == b"OK 1\r\nOK 2\r\nOK 3\r\n"
        r = workloads.concurrent_writers(s.port, "logd", 4, 2, 0.3)
        assert r["msgs"] > 0
