"""The load generator: one set of socket loops, driven by a codec from ``wire.py``.

Nothing here knows which server it talks to; every loop takes a codec and
calls only its encode/parse functions. Every loop is bounded by a deadline
and every socket has a timeout.

Each workload returns a dict of figures. ``client_cpu`` is the CPU seconds
the load generator spent (all its processes), ``client_cores`` that divided
by the wall time: near 1.0 per client process means the client, not the
server, may be the bottleneck.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import selectors
import socket
import time
import traceback
from array import array
from collections import deque

from wire import CODECS, RAW_READERS, ReplyError

IO_TIMEOUT = 30.0  # no single recv/send waits longer than this
RECV_SIZE = 64 * 1024  # under glibc's mmap threshold: a 256 KiB recv cost ~8 us per reply
BODY_SIZE = 100
BODY = (b"logd-bench-" * 10)[:BODY_SIZE]

perf = time.perf_counter
perf_ns = time.perf_counter_ns  # CLOCK_MONOTONIC: comparable across processes


class BenchTimeout(RuntimeError):
    pass


def connect(port: int, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(IO_TIMEOUT)
    return s


class Conn:
    """A socket and its receive buffer; ``pos`` is where parsing resumes."""

    __slots__ = ("sock", "buf", "pos", "sent_at")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0
        self.sent_at = 0.0

    def fill(self) -> None:
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("server closed the connection")
        buf = self.buf
        if self.pos == len(buf):
            buf.clear()
            self.pos = 0
        elif self.pos > 1 << 20:
            del buf[: self.pos]
            self.pos = 0
        buf += data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def percentiles(values, ps=(50, 99, 99.9)) -> dict:
    """Nearest-rank percentiles of ``values`` (seconds) in milliseconds."""
    v = sorted(values)
    out: dict = {"n": len(v)}
    if not v:
        return out
    for p in ps:
        # rank ceil(p% of n); round() here once rounded half to even and picked p99 one rank high
        k = max(0, min(len(v) - 1, math.ceil(p * len(v) / 100 - 1e-9) - 1))
        out[f"p{p:g}_ms"] = v[k] * 1000
    out["max_ms"] = v[-1] * 1000
    out["mean_ms"] = sum(v) / len(v) * 1000
    return out


def figures(msgs: int, requests: int, wall: float, cpu: float) -> dict:
    """A one-connection workload's figures: rate, and the client's CPU (seconds, cores)."""
    return {"msgs": msgs, "requests": requests, "wall_s": wall, "msgs_per_s": msgs / wall,
            "mb_per_s": msgs * BODY_SIZE / wall / 1e6, "client_cpu": cpu, "client_cores": cpu / wall}


# -- one connection: pipelined writes ---------------------------------------------


def write_loop(port: int, codec_name: str, n_requests: int, per_request: int, window: int,
               latencies: list | None, timeout: float) -> dict:
    """Send ``n_requests`` writes of ``per_request`` bodies, ``window`` in flight.

    W1 is (10_000, 100, 8); W2 is (20_000, 1, 1) with latencies.
    """
    codec = CODECS[codec_name]
    encode = codec.encode_write
    parse = codec.parse_reply
    replies = codec.replies_per_write(per_request)
    bodies = [BODY] * per_request
    conn = Conn(connect(port))
    sock = conn.sock
    sent = done = 0
    left = replies
    sent_at: deque = deque()
    cpu0 = time.process_time()
    t0 = perf()
    deadline = t0 + timeout
    try:
        while done < n_requests:
            if sent < n_requests and sent - done < window:
                out = []
                now = perf()
                while sent < n_requests and sent - done < window:
                    out.append(encode(bodies))
                    sent_at.append(now)
                    sent += 1
                sock.sendall(b"".join(out) if len(out) > 1 else out[0])
            conn.fill()
            now = perf()
            buf = conn.buf
            pos = conn.pos
            while True:
                p = parse(buf, pos)
                if p < 0:
                    break
                pos = p
                left -= 1
                if left == 0:
                    left = replies
                    done += 1
                    t_sent = sent_at.popleft()
                    if latencies is not None:
                        latencies.append(now - t_sent)
            conn.pos = pos
            if now > deadline:
                raise BenchTimeout(f"write loop not done after {timeout}s ({done}/{n_requests} requests)")
    finally:
        conn.close()
    wall = perf() - t0
    cpu = time.process_time() - cpu0
    return figures(n_requests * per_request, n_requests, wall, cpu)


# -- one connection: read everything from the beginning -------------------------------


def read_all(port: int, codec_name: str, count: int, timeout: float, raw: bool = False) -> dict:
    """W4: read ``count`` messages from the first (logd READ; Redis XRANGE pages).

    ``raw``: count the records without parsing them (``wire.RAW_READERS``):
    what the server delivers when the client costs next to nothing.
    """
    codec = CODECS[codec_name]
    reader = RAW_READERS[codec_name](count) if raw else codec.range_reader(count)
    conn = Conn(connect(port))
    total = requests = 0
    cpu0 = time.process_time()
    t0 = perf()
    deadline = t0 + timeout
    try:
        conn.sock.sendall(reader.first_request())
        requests = 1
        while True:
            conn.fill()
            pos, n, nxt, done = reader.feed(conn.buf, conn.pos, None)
            conn.pos = pos
            total += n
            if done:
                break
            if nxt is not None:
                conn.sock.sendall(nxt)
                requests += 1
            if perf() > deadline:
                raise BenchTimeout(f"read not done after {timeout}s ({total}/{count})")
    finally:
        conn.close()
    wall = perf() - t0
    cpu = time.process_time() - cpu0
    if total != count:
        raise ReplyError(f"read {total} messages, expected {count}")
    return figures(total, requests, wall, cpu)


def parse_ceiling(codec_name: str, count: int = 100_000) -> dict:
    """How fast this client parses a W4 reply with no server at all (records/s).

    Synthetic replies of ``count`` 100-byte messages (logd: one READ stream
    with checksums; Redis: XRANGE pages of 1,000) fed to the same reader
    W4 uses. W4 cannot go faster than this on one client core, whatever the
    server does.
    """
    from zlib import crc32

    from wire import PAGE

    codec = CODECS[codec_name]
    reader = codec.range_reader(count)
    reader.first_request()
    if codec_name == "logd":
        recs = []
        for i in range(1, count + 1):
            head = b"%d %d %d" % (i, len(BODY), (-i) % 100)  # as MSGs of 100
            recs.append(b"+%s %08x\r\n%s\r\n" % (head, crc32(BODY, crc32(head)), BODY))
        chunks = [b"OK\r\n" + b"".join(recs) + b"+EOF\r\n"]
    else:
        chunks = []
        for p in range(0, count, PAGE):
            n = min(PAGE, count - p)
            ents = []
            for i in range(p, p + n):
                eid = b"1764000000000-%d" % i
                ents.append(b"*2\r\n$%d\r\n%s\r\n*2\r\n$1\r\nd\r\n$%d\r\n%s\r\n" % (len(eid), eid, len(BODY), BODY))
            chunks.append(b"*%d\r\n" % n + b"".join(ents))
    bufs = [bytearray(c) for c in chunks]
    total = 0
    t0 = perf()
    for buf in bufs:
        _pos, n, _nxt, _done = reader.feed(buf, 0, None)
        total += n
    wall = perf() - t0
    if total != count:
        raise ReplyError(f"parse ceiling: parsed {total} of {count}")
    return {"msgs": total, "msgs_per_s": total / wall, "us_per_msg": wall / total * 1e6}


# -- child processes ---------------------------------------------------------------------


def _child(target, args, conn) -> None:
    try:
        conn.send(target(*args))
    except BaseException as e:  # report, never hang the parent
        conn.send({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
    finally:
        conn.close()


class Children:
    """Client processes (fork), each returning one dict through a pipe; bounded waits."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("fork")
        self.procs: list = []

    def start(self, target, *args) -> None:
        parent, child = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=_child, args=(target, args, child), daemon=True)
        p.start()
        child.close()
        self.procs.append((p, parent))

    def results(self, timeout: float) -> list[dict]:
        deadline = perf() + timeout
        out = []
        for p, conn in self.procs:
            left = max(0.0, deadline - perf())
            if conn.poll(left):
                try:
                    out.append(conn.recv())
                except EOFError:
                    out.append({"error": f"client process {p.pid} died (exit {p.exitcode})"})
            else:
                out.append({"error": f"client process {p.pid} gave no result within {timeout}s"})
        return out

    def stop(self) -> None:
        for p, conn in self.procs:
            p.join(2)
            if p.is_alive():
                p.terminate()  # by PID
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
            conn.close()
        self.procs = []


def _wait_until(t: float) -> None:
    while True:
        d = t - perf()
        if d <= 0:
            return
        time.sleep(min(d, 0.05))


# -- W3: many connections, sequential single-message writes ----------------------------


def _w3_worker(port: int, codec_name: str, nconns: int, start_at, duration: float, ready) -> dict:
    codec = CODECS[codec_name]
    encode = codec.encode_write
    parse = codec.parse_reply
    bodies = [BODY]
    conns = [Conn(connect(port)) for _ in range(nconns)]
    sel = selectors.DefaultSelector()
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    ready.set()
    t_deadline = perf() + 60
    while start_at.value == 0.0 and perf() < t_deadline:
        time.sleep(0.005)
    t0 = start_at.value
    _wait_until(t0)
    t_end = t0 + duration
    hard = t_end + IO_TIMEOUT
    lat = array("d")
    count = 0
    cpu0 = time.process_time()
    now = perf()
    for c in conns:
        c.sent_at = now
        c.sock.sendall(encode(bodies))
    active = nconns
    while active:
        events = sel.select(1.0)
        if perf() > hard:
            raise BenchTimeout(f"W3 worker: {active} connections still waiting {IO_TIMEOUT}s after the end")
        for key, _ in events:
            c = key.data
            try:
                c.fill()
            except BlockingIOError:
                continue
            p = parse(c.buf, c.pos)
            if p < 0:
                continue
            c.pos = p
            now = perf()
            lat.append(now - c.sent_at)
            if now <= t_end:
                count += 1
                c.sent_at = now
                c.sock.sendall(encode(bodies))  # one request of ~130 bytes: never blocks
            else:
                sel.unregister(c.sock)
                active -= 1
    cpu = time.process_time() - cpu0
    for c in conns:
        c.close()
    return {"count": count, "lat": lat.tobytes(), "cpu": cpu}


def concurrent_writers(port: int, codec_name: str, nconns: int, procs: int, duration: float,
                       server_cpu=None) -> dict:
    """W3: ``nconns`` connections over ``procs`` client processes, for ``duration`` seconds.

    ``server_cpu``: a callable returning the server's CPU seconds, read when the
    clock starts and when it stops: ``window_server_cpu`` is the server's CPU of
    the measured seconds only, without accepting and closing the connections
    (which grows with their count and is not the cost of a request).
    """
    kids = Children()
    start_at = kids.ctx.Value("d", 0.0)
    readies = []
    try:
        per = [nconns // procs + (1 if i < nconns % procs else 0) for i in range(procs)]
        for n in per:
            ev = kids.ctx.Event()
            readies.append(ev)
            kids.start(_w3_worker, port, codec_name, n, start_at, duration, ev)
        for ev in readies:
            if not ev.wait(30):
                break
        start_at.value = t_start = perf() + 0.2
        window = None
        if server_cpu is not None:
            _wait_until(t_start)
            c0 = server_cpu()
            _wait_until(t_start + duration)
            window = server_cpu() - c0
        results = kids.results(duration + IO_TIMEOUT + 40)
    finally:
        start_at.value = start_at.value or 1.0  # release waiting workers on error
        kids.stop()
    errors = [r["error"] + "\n" + r.get("traceback", "") for r in results if "error" in r]
    if errors:
        raise RuntimeError("W3 client failed: " + errors[0])
    lat = array("d")
    count = 0
    cpu = 0.0
    for r in results:
        a = array("d")
        a.frombytes(r["lat"])
        lat.extend(a)
        count += r["count"]
        cpu += r["cpu"]
    out = {"msgs": count, "wall_s": duration, "msgs_per_s": count / duration, "conns": nconns,
           "client_procs": procs, "client_cpu": cpu, "client_cores": cpu / duration}
    if window is not None:
        out["window_server_cpu"] = window
    out.update(percentiles(lat))
    return out


# -- W5: a paced writer and a tailing reader -------------------------------------------------


def _w5_writer(port: int, codec_name: str, rate: float, duration: float, start_at, ready) -> dict:
    codec = CODECS[codec_name]
    encode = codec.encode_write
    parse = codec.parse_reply
    pad = BODY[: BODY_SIZE - 20]
    conn = Conn(connect(port))
    sock = conn.sock
    ready.set()
    t_deadline = perf() + 60
    while start_at.value == 0.0 and perf() < t_deadline:
        time.sleep(0.005)
    t0 = start_at.value
    _wait_until(t0)
    total = int(rate * duration)
    sent = acked = 0
    late = 0.0
    cpu0 = time.process_time()
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)

    def take_acks() -> int:
        """Receive what is there; count the complete replies in it."""
        conn.fill()
        pos, n = conn.pos, 0
        while (p := parse(conn.buf, pos)) >= 0:
            pos = p
            n += 1
        conn.pos = pos
        return n

    while sent < total:
        now = perf()
        due = min(total, int((now - t0) * rate) + 1) - sent
        if due > 0:
            late = max(late, now - (t0 + sent / rate))
            out = []
            for _ in range(due):
                out.append(encode([b"%020d" % perf_ns() + pad]))
            sock.sendall(b"".join(out))
            sent += due
        wait = t0 + sent / rate - perf()
        if sel.select(max(0.0, wait)):
            acked += take_acks()
        if perf() > t0 + duration + IO_TIMEOUT:
            raise BenchTimeout("W5 writer fell behind by more than the I/O timeout")
    t_sent = perf()
    hard = t_sent + IO_TIMEOUT
    while acked < sent and perf() < hard:
        if sel.select(1.0):
            acked += take_acks()
    cpu = time.process_time() - cpu0
    conn.close()
    return {"sent": sent, "acked": acked, "send_wall_s": t_sent - t0, "max_late_ms": late * 1000, "cpu": cpu}


def _w5_reader(port: int, codec_name: str, expected, duration: float, ready) -> dict:
    codec = CODECS[codec_name]
    conn = Conn(connect(port))
    sock = conn.sock
    sock.sendall(codec.head_request())
    while True:
        conn.fill()
        pos, head = codec.parse_head(conn.buf, conn.pos)
        if pos >= 0:
            conn.pos = pos
            break
    reader = codec.tail_reader(head)
    sock.sendall(reader.first_request())
    sock.settimeout(0.5)
    ready.set()
    lat = array("d")
    bodies: list = []
    got = 0
    cpu0 = time.process_time()
    hard = perf() + 60 + duration + IO_TIMEOUT
    while True:
        if 0 <= expected.value <= got:
            break
        if perf() > hard:
            raise BenchTimeout(f"W5 reader: {got} of {expected.value} messages by the deadline")
        try:
            conn.fill()
        except socket.timeout:
            continue
        pos, n, nxt, _done = reader.feed(conn.buf, conn.pos, bodies)
        now = perf_ns()
        conn.pos = pos
        if nxt is not None:
            sock.sendall(nxt)
        if n:
            for b in bodies:
                lat.append((now - int(b[:20])) / 1e9)
            got += n
            bodies.clear()
    cpu = time.process_time() - cpu0
    conn.close()
    return {"received": got, "lat": lat.tobytes(), "cpu": cpu}


def tail_latency(port: int, codec_name: str, rate: float, duration: float, read_port: int | None = None) -> dict:
    """W5: one tailing reader, one writer at ``rate`` msg/s for ``duration`` s (separate processes).

    ``read_port``: the reader tails another server (W8: a read replica) than the one written to.
    """
    kids = Children()
    start_at = kids.ctx.Value("d", 0.0)
    expected = kids.ctx.Value("q", -1)
    r_ready = kids.ctx.Event()
    w_ready = kids.ctx.Event()
    try:
        kids.start(_w5_reader, read_port or port, codec_name, expected, duration, r_ready)
        if not r_ready.wait(30):
            raise BenchTimeout("W5 reader did not start")
        kids.start(_w5_writer, port, codec_name, rate, duration, start_at, w_ready)
        if not w_ready.wait(30):
            raise BenchTimeout("W5 writer did not start")
        time.sleep(0.2)
        start_at.value = perf() + 0.2
        # the writer's result comes second in the list, but the reader needs its count first
        wproc, wconn = kids.procs[1]
        if not wconn.poll(duration + IO_TIMEOUT + 30):
            raise BenchTimeout("W5 writer gave no result")
        wres = wconn.recv()
        if "error" in wres:
            raise RuntimeError("W5 writer failed: " + wres["error"] + "\n" + wres.get("traceback", ""))
        expected.value = wres["sent"]
        rproc, rconn = kids.procs[0]
        if not rconn.poll(IO_TIMEOUT + 30):
            raise BenchTimeout("W5 reader gave no result")
        rres = rconn.recv()
        if "error" in rres:
            raise RuntimeError("W5 reader failed: " + rres["error"] + "\n" + rres.get("traceback", ""))
    finally:
        start_at.value = start_at.value or 1.0
        if expected.value < 0:
            expected.value = 0
        kids.stop()
    lat = array("d")
    lat.frombytes(rres["lat"])
    out = {"sent": wres["sent"], "acked": wres["acked"], "received": rres["received"],
           "rate": rate, "achieved_rate": wres["sent"] / max(wres["send_wall_s"], 1e-9),
           "writer_max_late_ms": wres["max_late_ms"], "client_cpu": wres["cpu"] + rres["cpu"],
           "client_cores": (wres["cpu"] + rres["cpu"]) / duration}
    out.update(percentiles(lat))
    return out
