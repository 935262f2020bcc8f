"""The replication workloads: W6 catch-up, W7 W1 with a follower, W8 replica visibility,
W1m/W2m synchronous acks. bench/README.rst says what each measures and how.

Each workload starts its own fresh processes (primary, follower or replica,
read replica), registers them with ``live`` (run.py stops whatever is left
there on any exit), measures, and stops them by PID in ``finally``. The load
itself is ``workloads.py``'s loops, the same for logd and Redis.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import traceback

import replstats
import workloads
from servers import LogdFollower, LogdServer, RedisServer, ServerError
from wire import STATS_REQUEST, ReplyError, parse_body_reply, parse_resp, resp_command

perf = time.perf_counter
POLL = 0.005  # how often catch-up completion is checked
SAMPLE = 0.05  # how often W7 samples the follower's lag
WAIT_TIMEOUT = 120.0  # bound on every "until" in this module (scaled up for big copies)
REDIS_REPLICA = ["--repl-diskless-sync-delay", "0"]  # no 5 s wait for more replicas before a full sync


class Unsupported(Exception):
    """The server under test rejects a flag this workload needs (e.g. --min-acks)."""


# -- control connections (not the measured load) -----------------------------------------


def _request(port: int, data: bytes, parse, timeout: float = 30.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = bytearray()
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
            pos, value = parse(buf, 0)
            if pos >= 0:
                return value


class Control:
    """One kept-open connection for repeated small requests (STATS / INFO sampling)."""

    def __init__(self, port: int, parse) -> None:
        self.sock = workloads.connect(port)
        self.parse = parse
        self.buf = bytearray()

    def call(self, data: bytes):
        self.sock.sendall(data)
        while True:
            pos, value = self.parse(self.buf, 0) if self.buf else (-1, None)
            if pos >= 0:
                del self.buf[:pos]
                return value
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def logd_stats(port: int) -> dict[str, str]:
    return replstats.parse_stats(_request(port, STATS_REQUEST, parse_body_reply))


def redis_call(port: int, *args: bytes):
    return _request(port, resp_command(*args), parse_resp)


def redis_info(port: int) -> dict:
    return replstats.parse_info(redis_call(port, b"INFO", b"replication"))


def _until(what: str, cond, timeout: float = WAIT_TIMEOUT, every: float = POLL, procs=()):
    deadline = perf() + timeout
    while True:
        v = cond()
        if v:
            return v
        for p in procs:
            p._check_alive(p.system)
        if perf() > deadline:
            raise workloads.BenchTimeout(f"{what}: not after {timeout:.0f}s")
        time.sleep(every)


# -- setups ----------------------------------------------------------------------------


class Rig:
    """The processes of one measurement; ``stop()`` stops them all by PID, newest first."""

    def __init__(self, args, mode: str, live: list) -> None:
        self.args, self.mode, self.live = args, mode, live
        self.procs: list = []

    def _add(self, proc):
        self.procs.append(proc)
        self.live.append(proc)
        return proc

    def logd(self, extra: list[str] | None = None) -> LogdServer:
        try:
            return self._add(LogdServer(self.mode, self.args.tmp_dir, self.args.logd_cmd,
                                        list(self.args.logd_arg) + list(extra or [])))
        except ServerError as e:
            flags = [f for f in (extra or []) if f.startswith("--")]
            if flags and ("unrecognized arguments" in str(e) or any(f in str(e) for f in flags)):
                raise Unsupported(f"not supported by this server: {' '.join(extra or [])} "
                                  f"({_last_line(str(e))})") from None
            raise

    def follower(self, primary: LogdServer) -> LogdFollower:
        return self._add(LogdFollower(self.mode, primary.port, self.args.tmp_dir, self.args.follower_cmd))

    def replica_server(self, follower: LogdFollower) -> LogdServer:
        """``logd serve --refuse`` on the follower's directory."""
        return self._add(LogdServer(self.mode, self.args.tmp_dir, self.args.logd_cmd, ["--refuse"],
                                    data_dir=follower.data))

    def redis(self, extra: list[str] | None = None) -> RedisServer:
        return self._add(RedisServer(self.mode, self.args.tmp_dir, REDIS_REPLICA + list(extra or [])))

    def cpu(self) -> dict:
        return {p.system + ("" if i == 0 else f"#{i}"): p.cpu() for i, p in enumerate(self.procs)}

    def stop(self) -> dict:
        codes = {}
        for i in reversed(range(len(self.procs))):
            p = self.procs[i]
            t = perf()
            try:
                p.stop()
            finally:
                if p in self.live:
                    self.live.remove(p)
            codes[f"{p.system}#{i}"] = {"exit": p.exit_code, "stop_s": round(perf() - t, 3)}
        self.procs = []
        return codes


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else text[:200]


def attach_follower(rig: Rig, primary: LogdServer) -> LogdFollower:
    """A follower, streaming: the primary's STATS lists it."""
    f = rig.follower(primary)
    f.wait_started()
    _until("follower connected", lambda: replstats.follower_lines(logd_stats(primary.port)),
           every=0.02, procs=[f])
    return f


def attach_replica(rig: Rig, master: RedisServer) -> RedisServer:
    """A Redis replica of ``master``, its (empty) full sync done."""
    r = rig.redis()
    redis_call(r.port, b"REPLICAOF", b"127.0.0.1", b"%d" % master.port)
    _until("redis replica synced", lambda: redis_done(r, master), every=0.02, procs=[r])
    r.wait_aof_written()  # its initial AOF rewrite (a fork) is not part of the workload
    return r


def redis_done(replica: RedisServer, master: RedisServer) -> bool:
    m = redis_info(master.port).get("master_repl_offset")
    return isinstance(m, int) and replstats.redis_synced(redis_info(replica.port), m)


def _cpu_delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _fill(port: int, codec: str, msgs: int) -> None:
    workloads.write_loop(port, codec, max(1, msgs // 100), 100, 8, None, timeout=900)


# -- W6: catch-up ----------------------------------------------------------------------------


def partition_files(directory: str) -> dict[str, int]:
    """{partition file name: size}."""
    out = {}
    for name in os.listdir(directory):
        if name.endswith(".log") and name[:10].isdigit():
            try:
                out[name] = os.stat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return out


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sendfile_rate(paths: list[str], rounds: int = 3) -> dict:
    """os.sendfile of ``paths`` over a loopback TCP socket into a reader that discards:
    the copy's upper bound on this machine. Best of ``rounds``."""
    total = sum(os.path.getsize(p) for p in paths)
    best = None
    for _ in range(rounds):
        with socket.socket() as lsock:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            got = [0]

            def reader(ls=lsock) -> None:
                c, _ = ls.accept()
                c.settimeout(workloads.IO_TIMEOUT)
                buf = bytearray(1 << 20)
                with c:
                    while got[0] < total:
                        n = c.recv_into(buf)
                        if not n:
                            break
                        got[0] += n

            th = threading.Thread(target=reader, daemon=True)
            th.start()
            with socket.create_connection(lsock.getsockname(), timeout=workloads.IO_TIMEOUT) as out:
                t0 = perf()
                for path in paths:
                    with open(path, "rb") as f:
                        out.sendfile(f)  # os.sendfile, waiting for the socket between calls (as logd does)
                th.join(workloads.IO_TIMEOUT)
                wall = perf() - t0
        if got[0] != total:
            raise RuntimeError(f"sendfile reader got {got[0]} of {total} bytes")
        best = wall if best is None else min(best, wall)
    assert best is not None
    return {"bytes": total, "wall_s": best, "mb_per_s": total / best / 1e6}


def w6_logd(rig: Rig, msgs: int) -> dict:
    primary = rig.logd()
    _fill(primary.port, "logd", msgs)
    head = int(logd_stats(primary.port)["head"])
    src = partition_files(primary.data)
    total = sum(src.values())
    limit = sendfile_rate([os.path.join(primary.data, n) for n in sorted(src)])
    timeout = WAIT_TIMEOUT + total / 5e6  # at least 5 MB/s, or it is an error
    cpu0 = rig.cpu()
    f = rig.follower(primary)
    t0 = f.spawned_at
    connected = None
    copy_cpu0 = 0.0
    log_seen = 0
    deadline = t0 + timeout
    while True:
        now = perf()
        if connected is None:
            # its copy is open and it is about to connect: from here on it is the copy
            # (connect, handshake, bytes), like Redis from REPLICAOF on
            evs = f.events()
            if any(ev.get("event") == "follower_started" for ev in evs[log_seen:]):
                connected = now
                copy_cpu0 = f.cpu()
            log_seen = len(evs)
        if os.path.isdir(f.data) and partition_files(f.data) == src:
            t_done = now
            break
        f._check_alive("logd-follower")
        if now > deadline:
            raise workloads.BenchTimeout(f"W6: the follower's copy not equal after {timeout:.0f}s")
        time.sleep(POLL)
    cpu = _cpu_delta(cpu0, rig.cpu())
    # what limits the copy: the follower's CPU per message while copying (start-up excluded)
    copy_cpu = f.cpu() - copy_cpu0 if connected is not None else float("nan")
    # the copy must be the primary's bytes, file by file
    bad = [n for n in sorted(src) if sha256_file(os.path.join(primary.data, n)) != sha256_file(os.path.join(f.data, n))]
    if bad:
        raise ReplyError(f"W6: follower's {bad[0]} differs from the primary's (sha256)")
    with_start = t_done - t0
    copy_s = t_done - (connected if connected is not None else t0)
    return _w6_result(msgs, total, copy_s, with_start, limit, cpu) | {
        "head": head, "partitions": len(src), "verified": "sha256 of %d partition files" % len(src),
        "follower_copy_cpu": copy_cpu, "follower_copy_cores": copy_cpu / copy_s if copy_s > 0 else None,
        "follower_us_per_msg": copy_cpu / msgs * 1e6}


def w6_redis(rig: Rig, msgs: int) -> dict:
    master = rig.redis()
    _fill(master.port, "redis", msgs)
    xlen = redis_call(master.port, b"XLEN", b"bench")
    used = replstats.parse_info(redis_call(master.port, b"INFO", b"memory")).get("used_memory_dataset", 0)
    replica = rig.redis()
    cpu0 = rig.cpu()
    t0 = perf()
    redis_call(replica.port, b"REPLICAOF", b"127.0.0.1", b"%d" % master.port)
    started = None
    timeout = WAIT_TIMEOUT + msgs * 130 / 5e6
    deadline = t0 + timeout
    while True:
        m = redis_info(master.port).get("master_repl_offset")
        info = redis_info(replica.port)
        now = perf()
        if started is None and info.get("master_sync_in_progress") == 1:
            started = now
        if isinstance(m, int) and replstats.redis_synced(info, m):
            t_done = now
            break
        replica._check_alive("redis replica")
        if now > deadline:
            raise workloads.BenchTimeout(f"W6: Redis replica not synced after {timeout:.0f}s: {info}")
        time.sleep(POLL)
    # and until its data is on its disk: the initial AOF rewrite after the sync (reported only)
    durable_s = t_done - t0 + replica.wait_aof_written()
    time.sleep(0.2)  # let the master reap its fork (its CPU is counted once reaped)
    cpu = _cpu_delta(cpu0, rig.cpu())
    got = redis_call(replica.port, b"XLEN", b"bench")
    if got != xlen or xlen != msgs:
        raise ReplyError(f"W6: Redis replica has XLEN {got}, master {xlen}, written {msgs}")
    last_m = redis_call(master.port, b"XREVRANGE", b"bench", b"+", b"-", b"COUNT", b"1")
    last_r = redis_call(replica.port, b"XREVRANGE", b"bench", b"+", b"-", b"COUNT", b"1")
    if last_m != last_r:
        raise ReplyError("W6: the replica's last entry differs from the master's")
    # Redis's bytes on the link are an RDB, not comparable with logd's files: no MB/s
    r = _w6_result(msgs, None, t_done - t0, None, None, cpu)
    r.update({"verified": f"XLEN {got} and last entry equal", "dataset_bytes": used, "aof_written_s": durable_s,
              "transfer_started_s": (started - t0) if started else None})
    return r


def _w6_result(msgs, total, seconds, with_start, limit, cpu) -> dict:
    """``seconds``: the copy (logd: from the follower's copy being open; Redis: from REPLICAOF);
    ``with_start``: logd from spawning the follower (Python start-up included)."""
    # A tiny copy can end within the poll that saw it start (seconds 0): no rate then.
    def rate(n: float) -> float:
        return n / seconds if seconds > 0 else float("nan")

    r = {"msgs": msgs, "bytes": total, "seconds": seconds, "msgs_per_s": rate(msgs),
         "server_cpu": sum(cpu.values()), "cpu_by_process": cpu,
         "wall_s": with_start or seconds}  # the span the CPU was measured over
    if total:
        r["mb_per_s"] = rate(total) / 1e6
    if with_start is not None:
        r["with_start_s"] = with_start
    if limit is not None and total:
        r["sendfile_mb_per_s"] = limit["mb_per_s"]
        r["sendfile_s"] = limit["wall_s"]
        r["fraction_of_sendfile"] = r["mb_per_s"] / limit["mb_per_s"]
    return r


# -- W7: W1 with a follower ------------------------------------------------------------------


class LagSampler:
    """A thread sampling the primary's STATS every ``SAMPLE`` s: head and the follower's written id."""

    def __init__(self, port: int) -> None:
        self.lag = replstats.Lag()
        self.samples = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._ctl = Control(port, parse_body_reply)
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t = perf()
                stats = replstats.parse_stats(self._ctl.call(STATS_REQUEST))
                self.samples += 1
                fl = replstats.follower_lines(stats)
                if fl and isinstance(fl[0].get("written"), tuple):
                    lag_s = fl[0].get("lag_seconds")
                    self.lag.add(t, int(stats["head"]), fl[0]["written"][2],  # type: ignore[index]
                                 float(lag_s) if isinstance(lag_s, int | float) else None)
                self._stop.wait(max(0.0, SAMPLE - (perf() - t)))
        except Exception as e:  # noqa: BLE001 -- reported with the result
            self.errors.append(f"{type(e).__name__}: {e}")

    def stop(self) -> dict:
        self._stop.set()
        self._th.join(10)
        self._ctl.close()
        out: dict = {"lag_samples": len(self.lag.ids), "stats_samples": self.samples}
        if self.errors:
            out["lag_error"] = self.errors[0]
        if self.lag.ids:
            ids = workloads.percentiles([v / 1000 for v in self.lag.ids])  # as "ms" of ids/1000
            ms = workloads.percentiles([v / 1000 for v in self.lag.ms])
            out.update({"lag_ids_p50": ids["p50_ms"], "lag_ids_p99": ids["p99_ms"], "lag_ids_max": ids["max_ms"],
                        "lag_ms_p50": ms["p50_ms"], "lag_ms_p99": ms["p99_ms"], "lag_ms_max": ms["max_ms"],
                        "lag_ms_method": "primary lag_seconds" if self.lag.server_ms else "sampled head history"})
        return out


def _w1(port: int, codec: str, p: dict) -> dict:
    c = p["W1"]
    return workloads.write_loop(port, codec, c["msgs"] // c["per_request"], c["per_request"], c["in_flight"],
                                None, timeout=900)


def w7_logd(rig: Rig, p: dict, follower: bool) -> dict:
    primary = rig.logd()
    f = attach_follower(rig, primary) if follower else None
    cpu0 = rig.cpu()
    sampler = LagSampler(primary.port)
    try:
        r = _w1(primary.port, "logd", p)
    finally:
        lag = sampler.stop()
    cpu = _cpu_delta(cpu0, rig.cpu())
    r.update(server_cpu=sum(cpu.values()), cpu_by_process=cpu, primary_cpu=cpu["logd"])
    if f is not None:
        r.update(lag)
        t = perf()
        head = int(logd_stats(primary.port)["head"])
        _until("follower has the head after W1",
               lambda: (replstats.follower_lines(logd_stats(primary.port)) or [{}])[0].get("written", (0, 0, 0))[2] >= head,  # type: ignore[index]
               every=0.01, procs=[f])
        r["drain_s"] = perf() - t
    return r


def w7_redis(rig: Rig, p: dict) -> dict:
    master = rig.redis()
    replica = attach_replica(rig, master)
    cpu0 = rig.cpu()
    r = _w1(master.port, "redis", p)
    cpu = _cpu_delta(cpu0, rig.cpu())
    r.update(server_cpu=sum(cpu.values()), cpu_by_process=cpu, primary_cpu=cpu["redis"])
    t = perf()
    _until("replica has the stream after W1", lambda: redis_done(replica, master), every=0.01, procs=[replica])
    r["drain_s"] = perf() - t
    return r


# -- W8: replica visibility ------------------------------------------------------------------


def w8_logd(rig: Rig, p: dict) -> dict:
    primary = rig.logd()
    f = attach_follower(rig, primary)
    replica = rig.replica_server(f)
    cpu0 = rig.cpu()
    c = p["W5"]
    r = workloads.tail_latency(primary.port, "logd", c["rate"], c["seconds"], read_port=replica.port)
    cpu = _cpu_delta(cpu0, rig.cpu())
    r.update(server_cpu=sum(cpu.values()), cpu_by_process=cpu)
    return r


def w8_redis(rig: Rig, p: dict) -> dict:
    master = rig.redis()
    replica = attach_replica(rig, master)
    cpu0 = rig.cpu()
    c = p["W5"]
    r = workloads.tail_latency(master.port, "redis", c["rate"], c["seconds"], read_port=replica.port)
    cpu = _cpu_delta(cpu0, rig.cpu())
    r.update(server_cpu=sum(cpu.values()), cpu_by_process=cpu)
    return r


# -- W1m / W2m: synchronous acks --------------------------------------------------------------


def wm_logd(rig: Rig, p: dict, w: str) -> dict:
    try:
        primary = rig.logd(["--min-acks", "1"])
    except Unsupported as e:
        return {"unsupported": str(e)}
    attach_follower(rig, primary)
    return _wm(rig, primary.port, "logd", p, w)


def wm_redis(rig: Rig, p: dict, w: str) -> dict:
    master = rig.redis()
    attach_replica(rig, master)
    return _wm(rig, master.port, "redis-wait", p, w)


def _wm(rig: Rig, port: int, codec: str, p: dict, w: str) -> dict:
    cpu0 = rig.cpu()
    if w == "W1m":
        r = _w1(port, codec, p)
    else:
        lat: list = []
        r = workloads.write_loop(port, codec, p["W2"]["requests"], 1, 1, lat, timeout=900)
        r.update(workloads.percentiles(lat))
    cpu = _cpu_delta(cpu0, rig.cpu())
    r.update(server_cpu=sum(cpu.values()), cpu_by_process=cpu)
    return r


# -- dispatch --------------------------------------------------------------------------------

WORKLOADS = ["W6", "W7", "W8", "W1m", "W2m"]


def run(w: str, system: str, mode: str, p: dict, args, live: list) -> dict:
    """One replication workload on fresh processes; everything started is stopped here."""
    out: dict = {}
    rig = Rig(args, mode, live)
    try:
        if w == "W6":
            out = w6_logd(rig, p["W6"]["msgs"]) if system == "logd" else w6_redis(rig, p["W6"]["msgs"])
        elif w == "W7":
            if system == "logd":
                base = w7_logd(rig, p, follower=False)
                rig.stop()
                out = w7_logd(rig, p, follower=True)
                out["without"] = base
                out["without_msgs_per_s"] = base["msgs_per_s"]
                out["with_over_without"] = out["msgs_per_s"] / base["msgs_per_s"]
            else:
                out = w7_redis(rig, p)
        elif w == "W8":
            out = w8_logd(rig, p) if system == "logd" else w8_redis(rig, p)
        elif w in ("W1m", "W2m"):
            out = wm_logd(rig, p, w) if system == "logd" else wm_redis(rig, p, w)
        else:
            raise ValueError(w)
    except Exception as e:  # noqa: BLE001 -- an error in the table, not a dead run
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}"}
        for i, proc in enumerate(rig.procs):
            tail = proc.log_tail(5)
            if tail:
                out.setdefault("logs", {})[f"{proc.system}#{i}"] = tail
    finally:
        out["exit_codes"] = rig.stop()
    if "msgs" in out and "received" not in out:
        out["msgs_per_s"] = out.get("msgs_per_s") or out["msgs"] / out["wall_s"]
    return out
