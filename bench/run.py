#!/usr/bin/env python3
"""logd vs Redis Streams, side by side: ``python bench/run.py [--quick]``.

See bench/README.rst for what each workload does and how to read the table.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pyclients  # noqa: E402
import replication  # noqa: E402
import servers  # noqa: E402
import workloads  # noqa: E402
from servers import MODES, LogdServer, Profiler, RedisServer, ServerError  # noqa: E402

# on the pair's long-lived servers, in this order (W4 reads what W1 wrote); W3 stands for
# every W3 connection count (W3, W3c256, ...: w3_name)
ORDER = ["W1", "W1py", "W4", "W4py", "W2", "W2py", "W3", "W5"]
REPL = replication.WORKLOADS  # W6 W7 W8 W1m W2m: each on its own fresh primary + follower/replica
ALL = ["W1", "W2", "W3", "W4", "W5"] + pyclients.WORKLOADS + REPL
W3_DEFAULT = 64  # W3 at this count keeps its name; other counts are W3c<N>
SYSTEMS = ["logd", "redis"]

# (workload, label, key, comparison, target ratio logd/redis); None: reported only
ROWS = [
    ("W1", "msgs/s", "msgs_per_s", ">=", 1.0),
    ("W1", "srv us/msg", "server_us_per_msg", None, None),
    ("W1py", "msgs/s", "msgs_per_s", None, None),
    ("W1py", "srv us/msg", "server_us_per_msg", None, None),
    ("W2", "p50 ms", "p50_ms", "<=", 1.2),
    ("W2", "p99 ms", "p99_ms", None, None),
    ("W2", "srv us/msg", "server_us_per_msg", None, None),
    ("W2py", "p50 ms", "p50_ms", None, None),
    ("W2py", "p99 ms", "p99_ms", None, None),
    ("W2py", "srv us/msg", "server_us_per_msg", None, None),
    ("W3", "msgs/s", "msgs_per_s", None, None),
    ("W3", "p99 ms", "p99_ms", None, None),
    ("W3", "srv us/msg", "server_us_per_msg", None, None),
    ("W4", "msgs/s", "msgs_per_s", ">=", 4.0),
    ("W4", "srv us/msg", "server_us_per_msg", None, None),
    ("W4", "client ceiling", "ceiling_msgs_per_s", None, None),
    ("W4", "raw msgs/s", "raw.msgs_per_s", None, None),
    ("W4", "raw srv us/msg", "raw.server_us_per_msg", None, None),
    ("W4py", "msgs/s", "msgs_per_s", ">=", 2.0),
    ("W4py", "srv us/msg", "server_us_per_msg", None, None),
    ("W5", "p50 ms", "p50_ms", None, None),
    ("W5", "p99 ms", "p99_ms", "<=", 1.0),
    # replication (issue 9, 10). "abs>=": logd's own figure against the target, no ratio
    ("W6", "catch-up s", "seconds", "<=", 1.0),
    ("W6", "incl. start s", "with_start_s", None, None),
    ("W6", "AOF written s", "aof_written_s", None, None),
    ("W6", "msgs/s", "msgs_per_s", None, None),
    ("W6", "MB/s", "mb_per_s", None, None),
    ("W6", "sendfile MB/s", "sendfile_mb_per_s", None, None),
    ("W6", "of sendfile", "fraction_of_sendfile", "abs>=", 0.5),
    ("W6", "srv us/msg", "server_us_per_msg", None, None),
    ("W6", "follower us/msg", "follower_us_per_msg", None, None),
    ("W7", "msgs/s", "msgs_per_s", ">=", 1.0),
    ("W7", "no-follower msgs/s", "without_msgs_per_s", None, None),
    ("W7", "with/without", "with_over_without", "abs>=", 0.9),
    ("W7", "lag p99 ids", "lag_ids_p99", None, None),
    ("W7", "lag p99 ms", "lag_ms_p99", None, None),
    ("W7", "srv us/msg", "server_us_per_msg", None, None),
    ("W8", "p50 ms", "p50_ms", None, None),
    ("W8", "p99 ms", "p99_ms", "<=", 1.0),
    ("W1m", "msgs/s", "msgs_per_s", None, None),
    ("W1m", "srv us/msg", "server_us_per_msg", None, None),
    ("W2m", "p50 ms", "p50_ms", None, None),
    ("W2m", "p99 ms", "p99_ms", None, None),
]

_live: list = []  # servers and profilers to stop whatever happens


def _cleanup() -> None:
    while _live:
        obj = _live.pop()
        try:
            obj.stop()
        except Exception:
            traceback.print_exc()


def _on_signal(signum, frame):  # noqa: ARG001
    raise SystemExit(128 + signum)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: every count and duration scaled by 0.1")
    ap.add_argument("--scale", type=float, default=None, help="scale counts and durations (default 1, --quick 0.1)")
    ap.add_argument("--workloads", "-w", default=",".join(ALL), help="comma list of W1..W5 (default all)")
    ap.add_argument("--modes", "-m", default="always,interval",
                    help="comma list: always (logd --fsync always vs Redis appendfsync always), "
                         "interval (logd --fsync interval:1000 vs Redis everysec)")
    ap.add_argument("--systems", default="logd,redis", help="comma list: logd,redis")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each workload N times, alternating which server goes first; report the median run")
    ap.add_argument("--w3-conns", type=parse_w3_conns, default=[W3_DEFAULT], metavar="64,256,1024",
                    help="W3's connection counts: W3 runs once per count (64 is W3, others W3c<N>)")
    ap.add_argument("--w3-procs", type=int, default=2, help="client processes for W3 (the machine has %d cores)" % (os.cpu_count() or 0))
    ap.add_argument("--w5-rate", type=float, default=5000.0, help="W5 writer rate, msg/s")
    ap.add_argument("--tmp-dir", default=None, help="where the servers' temp data dirs go (default: $TMPDIR or /tmp); "
                                                      "must be a real disk for fsync to mean anything")
    ap.add_argument("--logd-cmd", default=None,
                    help="command that runs logd, before 'serve' (default: '%s -m logd')" % sys.executable)
    ap.add_argument("--logd-arg", action="append", default=[], help="extra flag for 'logd serve' (repeatable)")
    ap.add_argument("--follower-cmd", default=None,
                    help="command that runs logd-follower (default: '%s -m follower')" % sys.executable)
    ap.add_argument("--profile", default="", metavar="W1,W4|all",
                    help="run py-spy record on the logd server during these workloads (raw stacks in bench/results/)")
    ap.add_argument("--results-dir", default=str(HERE / "results"))
    return ap.parse_args(argv)


def parse_w3_conns(value: str) -> list[int]:
    """``"64,256,1024"`` -> [64, 256, 1024]: distinct positive counts, in the order given."""
    out: list[int] = []
    for item in value.split(","):
        item = item.strip()
        try:
            n = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a connection count: {item!r}") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"a connection count must be at least 1: {n}")
        if n not in out:
            out.append(n)
    return out


def w3_name(conns: int) -> str:
    return "W3" if conns == W3_DEFAULT else f"W3c{conns}"


def w3_conns(name: str) -> int | None:
    """The connection count a W3 workload name stands for (None: not a W3 name)."""
    if name == "W3":
        return W3_DEFAULT
    if name.startswith("W3c") and name[3:].isdigit() and int(name[3:]) > 0:
        return int(name[3:])
    return None


def expand_w3(selected: list[str], conns: list[int]) -> list[str]:
    """``-w W3`` means W3 at every ``--w3-conns`` count (by rising count); W3c<N> names stay as given."""
    out: list[str] = []
    for w in selected:
        names = [w3_name(n) for n in sorted(conns)] if w == "W3" else [w]
        out.extend(n for n in names if n not in out)
    return out


def shared_order(selected: list[str]) -> list[str]:
    """The selected workloads that run on the pair's long-lived servers, in ORDER (W3s by count)."""
    def key(w: str) -> tuple[int, int]:
        n = w3_conns(w)
        return (ORDER.index("W3"), n) if n is not None else (ORDER.index(w), 0)

    return sorted((w for w in selected if w in ORDER or w3_conns(w) is not None), key=key)


def rows_for(selected: list[str]) -> list[tuple]:
    """ROWS for the selected workloads; every W3 count gets W3's rows under its own name."""
    w3s = sorted((w for w in selected if w3_conns(w) is not None), key=lambda w: w3_conns(w) or 0)
    w3_rows = [r for r in ROWS if r[0] == "W3"]
    out: list[tuple] = []
    for row in ROWS:
        if row is w3_rows[0]:  # all W3 rows, once per count
            out.extend((w,) + r[1:] for w in w3s for r in w3_rows)
        elif row[0] != "W3" and row[0] in selected:
            out.append(row)
    return out


def selected_py(selected: list[str]) -> str | None:
    """The first library workload selected (the notes name each library once, under it)."""
    return next((w for w in selected if w in pyclients.WORKLOADS), None)


def primary_key(w: str) -> str:
    return PRIMARY["W3" if w3_conns(w) is not None else w]


def _csv(value: str, allowed: list[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if value.strip().lower() == "all":
        return list(allowed)
    if what == "workload":  # case-insensitive: w1, W1m, w1M
        canon = {a.upper(): a for a in allowed}
        items = [canon.get(v.upper(), v) for v in items]
        items = [f"W3c{v[3:]}" if v.upper().startswith("W3C") else v for v in items]
    bad = [v for v in items if v not in allowed and not (what == "workload" and w3_conns(v) is not None)]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def plan(args: argparse.Namespace) -> dict:
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    return {
        "scale": scale,
        "W1": {"msgs": max(1000, int(1_000_000 * scale)) // 100 * 100, "per_request": 100, "in_flight": 8},
        "W2": {"requests": max(100, int(20_000 * scale))},
        "W3": {"conns": list(args.w3_conns), "procs": args.w3_procs, "seconds": max(1.0, 10 * scale)},
        "W4": {"msgs": max(1000, int(1_000_000 * scale)) // 100 * 100},
        "W5": {"rate": args.w5_rate, "seconds": max(1.0, 10 * scale)},
        "W6": {"msgs": max(1000, int(1_000_000 * scale)) // 100 * 100},
    }


def run_workload(w: str, server, p: dict) -> dict:
    port = server.port
    codec = server.system
    if w == "W1":
        c = p["W1"]
        return workloads.write_loop(port, codec, c["msgs"] // c["per_request"], c["per_request"], c["in_flight"],
                                    None, timeout=900)
    if w == "W2":
        lat: list = []
        r = workloads.write_loop(port, codec, p["W2"]["requests"], 1, 1, lat, timeout=900)
        r.update(workloads.percentiles(lat))
        return r
    if w == "W1py":
        c = p["W1"]
        return pyclients.write(port, codec, c["msgs"] // c["per_request"], c["per_request"], c["in_flight"],
                               None, timeout=900)
    if w == "W2py":
        return pyclients.write(port, codec, p["W2"]["requests"], 1, 1, [], timeout=900)
    if w == "W4py":
        return pyclients.read(port, codec, p["W4"]["msgs"], timeout=900)
    if (conns := w3_conns(w)) is not None:
        c = p["W3"]
        short = fd_shortfall(conns)
        if short:
            raise servers.ServerError(short)
        return workloads.concurrent_writers(port, codec, conns, c["procs"], c["seconds"], server_cpu=server.cpu)
    if w == "W4":
        return workloads.read_all(port, codec, p["W4"]["msgs"], timeout=900)
    if w == "W4raw":
        # W4 again without parsing: the server's delivery rate with a client that costs ~nothing
        return workloads.read_all(port, codec, p["W4"]["msgs"], timeout=900, raw=True)
    if w == "W5":
        c = p["W5"]
        return workloads.tail_latency(port, codec, c["rate"], c["seconds"])
    raise ValueError(w)


def cpu_by_process() -> dict:
    """{pid: (name, cpu seconds)} for every process, from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        out[int(name)] = (comm, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _client_pids(before: dict, after: dict) -> set:
    """Pids of processes started by this script (client processes) that appeared during a workload."""
    me = os.getpid()
    out = set()
    for pid in after:
        if pid in before:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == me:
            out.add(pid)
    return out


def others(before: dict, after: dict, exclude: set, wall: float) -> list:
    """Processes other than ours that used the CPU between two snapshots: [[name, cores], ...]."""
    used: dict = {}
    for pid, (comm, cpu) in after.items():
        if pid in exclude:
            continue
        d = cpu - before.get(pid, (comm, 0.0))[1]
        if d > 0:
            key = comm.split("/")[0]  # kworker/1:1H -> kworker
            if key.startswith("python"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                    key = " ".join(a.decode(errors="replace").rsplit("/", 1)[-1] for a in argv[:4] if a)
                except OSError:
                    pass
            used[key] = used.get(key, 0.0) + d
    top = sorted(used.items(), key=lambda kv: -kv[1])
    return [[k, round(v / wall, 3)] for k, v in top[:5] if v / wall >= 0.01]


PRIMARY = {"W1py": "msgs_per_s", "W2py": "p50_ms", "W4py": "msgs_per_s", "W1": "msgs_per_s", "W2": "p50_ms", "W3": "msgs_per_s", "W4": "msgs_per_s", "W5": "p99_ms",
           "W6": "seconds", "W7": "msgs_per_s", "W8": "p99_ms", "W1m": "msgs_per_s", "W2m": "p50_ms"}


def measure_repl(w: str, system: str, mode: str, p: dict, args, rep: int) -> dict:
    """One replication workload on its own fresh processes (replication.run starts and stops them)."""
    log(f"  {system} {mode}: {w}" + (f" (repeat {rep + 1})" if args.repeat > 1 else ""))
    snap0 = cpu_by_process()
    t0 = time.perf_counter()
    r = replication.run(w, system, mode, p, args, _live)
    wall = time.perf_counter() - t0
    snap1 = cpu_by_process()
    # the servers it started are gone by now, so "others" is everything but this script and its children
    r["other_processes"] = others(snap0, snap1, {os.getpid()} | _client_pids(snap0, snap1), wall)
    r["other_cores"] = sum(c for _n, c in r["other_processes"])
    r["bench_wall_s"] = wall
    if "wall_s" in r and "server_cpu" in r:
        r["server_cores"] = r["server_cpu"] / r["wall_s"]
    msgs = r.get("msgs") or r.get("received")
    if msgs and "server_cpu" in r and "error" not in r:
        r["server_us_per_msg"] = r["server_cpu"] / msgs * 1e6
    if "error" in r:
        log(f"  {system} {mode} {w} FAILED: {r['error']}")
        for who, tail in r.get("logs", {}).items():
            log(f"  {who} log tail:\n{tail}")
    else:
        log("    " + _brief(w, r))
    return r


def measure(w: str, server, p: dict, args, stamp: str, profile: set, rep: int) -> dict:
    """Run one workload once against one server, with its CPU accounting (and profile)."""
    system, mode = server.system, server.mode
    log(f"  {system} {mode}: {w}" + (f" (repeat {rep + 1})" if args.repeat > 1 else ""))
    prof = None
    if system == "logd" and w in profile:
        path = os.path.join(args.results_dir, f"profile-{stamp}-{mode}-{w}-{rep + 1}.txt")
        try:
            prof = Profiler(server.pid, path)
            _live.append(prof)
        except ServerError as e:
            log(f"  profiling unavailable: {e}")
    cpu0 = server.cpu()
    snap0 = cpu_by_process()
    t0 = time.perf_counter()
    try:
        r = run_workload(w, server, p)
    except Exception as e:
        r = {"error": f"{type(e).__name__}: {e}"}
        log(f"  {system} {mode} {w} FAILED: {r['error']}")
        traceback.print_exc()
        tail = server.log_tail(10)
        if tail:
            log("  server log tail:\n" + tail)
    wall = time.perf_counter() - t0
    r["server_cpu"] = server.cpu() - cpu0
    r["bench_wall_s"] = wall
    r["server_cores"] = r["server_cpu"] / wall if wall else 0.0
    # CPU used by anything but the servers and this load generator (a lower bound: processes
    # that exited during the workload are not seen)
    ours = {os.getpid()} | {s.pid for s in _live if isinstance(s, servers.Server) and s.proc is not None}
    snap1 = cpu_by_process()
    r["other_processes"] = others(snap0, snap1, ours | _client_pids(snap0, snap1), wall)
    r["other_cores"] = sum(c for _n, c in r["other_processes"])
    msgs = r.get("msgs") or r.get("received")
    if "window_server_cpu" in r:  # W3: the measured seconds only, not connecting and closing
        r["server_cpu_with_connects"] = r["server_cpu"]
        r["server_cpu"] = r["window_server_cpu"]
        r["server_cores"] = r["server_cpu"] / r["wall_s"]
    if msgs and "error" not in r:
        r["server_us_per_msg"] = r["server_cpu"] / msgs * 1e6
    if w == "W4" and "error" not in r:
        # the same reader on synthetic bytes, no server: W4's client-side limit
        r["ceiling_msgs_per_s"] = workloads.parse_ceiling(system, min(p["W4"]["msgs"], 200_000))["msgs_per_s"]
    if prof is not None:
        prof.stop()
        _live.remove(prof)
        r["profile"] = prof.summary()
    log("    " + _brief(w, r))
    return r


def combine(w: str, runs: list[dict]) -> dict:
    """One result for repeated runs: the run with the median primary figure, plus all of them."""
    if len(runs) == 1:
        return runs[0]
    good = [r for r in runs if "error" not in r]
    if not good:
        return dict(runs[0], runs=runs)
    key = primary_key(w)
    good.sort(key=lambda r: r.get(key, 0))
    med = dict(good[(len(good) - 1) // 2])
    med["repeats"] = [r.get(key) for r in runs if "error" not in r]
    med["runs"] = runs
    return med


def bench_mode(mode: str, systems: list[str], selected: list[str], p: dict, args, stamp: str, profile: set) -> dict:
    """Start one server per system for this durability pair and run the workloads interleaved:
    W1 on logd, W1 on Redis, W4 on logd, ... so that any disturbance hits both sides alike."""
    out: dict = {s: {} for s in systems}
    live: dict = {}
    shared = shared_order(selected)
    try:
        for system in systems if shared else []:
            log(f"starting {system} ({mode})")
            try:
                if system == "logd":
                    server = LogdServer(mode, args.tmp_dir, args.logd_cmd, args.logd_arg)
                else:
                    server = RedisServer(mode, args.tmp_dir)
            except ServerError as e:
                log(f"{system} ({mode}) did not start: {e}")
                out[system] = {w: {"error": str(e)} for w in selected}
                continue
            _live.append(server)
            live[system] = server
            out[system]["_server"] = {"argv": server.argv, "pid": server.pid, "port": server.port}
        if shared:
            run_shared(mode, systems, selected, p, args, stamp, profile, out, live)
        stop_shared(mode, out, live)  # the replication workloads start their own
        for w in REPL:
            if w not in selected:
                continue
            runs = {s: [] for s in systems}
            for rep in range(args.repeat):
                for system in systems if rep % 2 == 0 else list(reversed(systems)):
                    runs[system].append(measure_repl(w, system, mode, p, args, rep))
            for system in systems:
                out[system][w] = combine(w, runs[system])
    finally:
        stop_shared(mode, out, live)
    return out


def stop_shared(mode: str, out: dict, live: dict) -> None:
    for system, server in list(live.items()):
        server.stop()
        if server in _live:
            _live.remove(server)
        out[system]["_server"]["exit_code"] = server.exit_code
        log(f"stopped {system} ({mode}), exit {server.exit_code}")
        del live[system]


def run_shared(mode: str, systems: list[str], selected: list[str], p: dict, args, stamp: str, profile: set,
               out: dict, live: dict) -> None:
    """W1-W5 on the pair's long-lived servers, interleaved."""
    filled = {s: False for s in systems}
    for w in shared_order(selected):
        runs: dict = {s: [] for s in live}
        for rep in range(args.repeat):
            order = list(live) if rep % 2 == 0 else list(reversed(list(live)))
            for system in order:
                server = live[system]
                if server.proc is None or server.proc.poll() is not None:
                    runs[system].append({"error": f"server exited with {server.proc.returncode if server.proc else '?'}"})
                    continue
                if w in ("W4", "W4py") and not filled[system]:
                    n = p["W4"]["msgs"]
                    log(f"  {system} {mode}: prefill {n} messages for W4")
                    workloads.write_loop(server.port, system, n // 100, 100, 8, None, timeout=900)
                    filled[system] = True
                r = measure(w, server, p, args, stamp, profile, rep)
                if w == "W4" and "error" not in r:
                    r["raw"] = measure("W4raw", server, p, args, stamp, profile, rep)
                if w in ("W1", "W1py") and "error" not in r and "not_installed" not in r:
                    filled[system] = True
                runs[system].append(r)
        for system in live:
            out[system][w] = combine(w, runs[system])
    for system, server in live.items():
        out[system]["_server"].update({"rss_mib": server.rss_mib(), "disk_mib": server.disk_mib()})


def _brief(w: str, r: dict) -> str:
    if "error" in r:
        return "error: " + r["error"]
    bits = []
    for k in ("msgs_per_s", "p50_ms", "p99_ms"):
        if k in r:
            bits.append(f"{k}={r[k]:,.3f}" if "ms" in k else f"{k}={r[k]:,.0f}")
    bits.append(f"client_cores={r.get('client_cores', 0):.2f} server_cores={r.get('server_cores', 0):.2f}")
    return " ".join(bits)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def _cell(r: dict, key: str):
    if "error" in r:
        return "error"
    if "unsupported" in r:
        return "unsupported"
    if "not_installed" in r:
        return "not installed"
    return r.get(key)


def table(results: dict, selected: list[str], modes: list[str]) -> tuple[str, list[dict]]:
    header = ["workload", "metric", "mode", "logd", "redis", "logd/redis", "target", "verdict", "client cores L/R", "server cores L/R"]
    rows = []
    records = []
    for w, label, key, cmp, target in rows_for(selected):
        for mode in modes:
            lr = results.get(mode, {}).get("logd", {}).get(w, {})
            rr = results.get(mode, {}).get("redis", {}).get(w, {})
            k = key
            if key.startswith("raw."):
                k = key[4:]
                lr = lr.get("raw", lr if "error" in lr else {})
                rr = rr.get("raw", rr if "error" in rr else {})
            lv, rv = _cell(lr, k), _cell(rr, k)
            ratio = lv / rv if isinstance(lv, float | int) and isinstance(rv, float | int) and rv else None
            if cmp is None:
                tgt, verdict = "report", ""
            elif cmp.startswith("abs"):  # logd's own figure against the target
                tgt = f"logd {cmp[3:]} {target:g}"
                verdict = "n/a" if not isinstance(lv, float | int) else ("ok" if lv >= target else "MISS")
            else:
                tgt = f"{cmp} {target:g}x"
                if ratio is None:
                    verdict = "n/a"
                elif (ratio >= target) if cmp == ">=" else (ratio <= target):
                    verdict = "ok"
                else:
                    verdict = "MISS"
            cc = f"{lr.get('client_cores', float('nan')):.2f}/{rr.get('client_cores', float('nan')):.2f}"
            sc = f"{lr.get('server_cores', float('nan')):.2f}/{rr.get('server_cores', float('nan')):.2f}"
            rows.append([w, label, mode, _fmt(lv), _fmt(rv), "-" if ratio is None else f"{ratio:.2f}x", tgt, verdict, cc, sc])
            records.append({"workload": w, "metric": label, "mode": mode, "logd": lv, "redis": rv,
                            "ratio": ratio, "target": tgt, "verdict": verdict})
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(widths[i]) if i < 3 or i > 5 else str(c).rjust(widths[i]) for i, c in enumerate(r)).rstrip()
             for r in [header] + rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines), records


def raise_nofile() -> list[int]:
    """RLIMIT_NOFILE soft up to hard for this process; the servers and client processes inherit it
    (W3 at 1,024 connections needs ~1,100 fds on each side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log(f"could not raise RLIMIT_NOFILE from {soft} to {hard}: {e}")
    return list(resource.getrlimit(resource.RLIMIT_NOFILE))


FD_MARGIN = 64  # the server's own files (log, partitions, listener) on top of one fd a connection


def fd_shortfall(conns: int, soft: int | None = None) -> str:
    """Why ``conns`` connections would not fit in the fd limit ('' when they do)."""
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or conns + FD_MARGIN <= soft:
        return ""
    return f"{conns} connections need about {conns + FD_MARGIN} fds; RLIMIT_NOFILE is {soft} (raise it: ulimit -n)"


def busy_cores(seconds: float) -> float:
    """How many cores were busy (all processes) over the next ``seconds``, from /proc/stat."""

    def busy() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:8]]
        return sum(v) - v[3] - v[4], sum(v)

    try:
        b0, _ = busy()
        time.sleep(seconds)
        b1, _ = busy()
    except OSError:
        return float("nan")
    return (b1 - b0) / os.sysconf("SC_CLK_TCK") / seconds


def environment(args) -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
           "tmp_dir": args.tmp_dir or os.environ.get("TMPDIR", "/tmp"), "loadavg_start": os.getloadavg(),
           "busy_cores_start": busy_cores(1.0)}
    try:
        env["redis"] = subprocess.run([servers.redis_binary(install=False), "--version"], capture_output=True,
                                      text=True, timeout=10).stdout.strip()
    except Exception as e:  # noqa: BLE001
        env["redis"] = f"unavailable: {e}"
    try:
        env["logd_commit"] = subprocess.run(["git", "-C", str(servers.REPO), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    try:
        env["tmp_fs"] = subprocess.run(["df", "-T", env["tmp_dir"]], capture_output=True, text=True,
                                       timeout=10).stdout.splitlines()[-1].split()[1]
    except Exception:  # noqa: BLE001
        pass
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = expand_w3(_csv(args.workloads, ALL, "workload"), args.w3_conns)
    modes = _csv(args.modes, list(MODES), "mode")
    systems = _csv(args.systems, SYSTEMS, "system")
    profile = set(_csv(args.profile, ALL, "workload")) if args.profile else set()
    p = plan(args)
    os.makedirs(args.results_dir, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    atexit.register(_cleanup)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    if "redis" in systems:
        servers.redis_binary(install=True)
    env = environment(args)
    env["nofile"] = raise_nofile()
    log(f"plan: {json.dumps(p)}")
    results: dict = {}
    t0 = time.time()
    try:
        for mode in modes:
            results[mode] = bench_mode(mode, systems, selected, p, args, stamp, profile)
    finally:
        _cleanup()
    env["loadavg_end"] = os.getloadavg()
    text, records = table(results, selected, modes)
    print()
    print(f"logd vs Redis Streams ({'quick, ' if p['scale'] != 1 else ''}scale {p['scale']:g}; "
          f"{env['cpus']} cpus; data in {env['tmp_dir']} ({env.get('tmp_fs', '?')}); {env['redis']})")
    print(text)
    notes = []
    if env.get("busy_cores_start", 0) > 0.3:
        notes.append(f"machine not idle at start: {env['busy_cores_start']:.2f} cores busy in the second before the run")
    for mode in modes:
        for system in systems:
            for w, r in results.get(mode, {}).get(system, {}).items():
                if w.startswith("_"):
                    continue
                if "error" in r:
                    notes.append(f"{w} {system} {mode}: ERROR {r['error']}")
                elif "unsupported" in r:
                    notes.append(f"{w} {system} {mode}: {r['unsupported']}")
                elif "not_installed" in r:
                    notes.append(f"{w} {system} {mode}: redis-py {r['not_installed']}")
                elif r.get("client_cores", 0) > 0.85 * (r.get("client_procs", 1)):
                    notes.append(f"{w} {system} {mode}: load generator at {r['client_cores']:.2f} cores "
                                 f"-- the client may be the bottleneck")
                busy = r.get("client_cores", 0) + r.get("server_cores", 0)
                if "error" not in r and busy > 0.8 * (env["cpus"] or 2) and r.get("bench_wall_s", 0) >= 2:
                    notes.append(f"{w} {system} {mode}: client + server used {busy:.2f} of {env['cpus']} cores "
                                 f"-- the machine's CPU is the limit, shared by both")
                if r.get("other_cores", 0) > 0.2 and r.get("bench_wall_s", 0) >= 2:
                    who = ", ".join(f"{n} {c:.2f}" for n, c in r["other_processes"])
                    notes.append(f"{w} {system} {mode}: other processes used {r['other_cores']:.2f} cores ({who})")
                if w in pyclients.WORKLOADS and r.get("client_impl") and w == selected_py(selected):
                    notes.append(f"{w} {system} {mode}: client {r['client_impl']}")
                if w == "W7" and r.get("lag_ms_method"):
                    notes.append(f"{w} {system} {mode}: follower lag from {r['lag_samples']} STATS samples "
                                 f"(~{replication.SAMPLE * 1000:.0f} ms apart), ms by {r['lag_ms_method']}; "
                                 f"caught up {r.get('drain_s', float('nan')):.3f} s after W1 ended")
                if w == "W6" and "error" not in r:
                    size = f", {r['bytes'] / 1e6:.1f} MB in {r['partitions']} partitions" if r.get("bytes") else ""
                    notes.append(f"{w} {system} {mode}: {r['msgs']:,} msgs{size}; copy verified: {r.get('verified')}")
                    if r.get("follower_copy_cores") is not None:
                        notes.append(f"{w} {system} {mode}: the follower used {r['follower_copy_cores']:.2f} cores "
                                     f"while copying ({r['follower_us_per_msg']:.2f} us/msg)"
                                     + (" -- it is CPU-bound" if r["follower_copy_cores"] > 0.85 else ""))
                if w in ("W5", "W8") and "error" not in r and "rate" in r and r.get("achieved_rate", 0) < 0.95 * r["rate"]:
                    notes.append(f"{w} {system} {mode}: writer reached only {r['achieved_rate']:.0f} msg/s")
                if "profile" in r and r["profile"].get("samples"):
                    pr = r["profile"]
                    top = "; ".join(f"{fr} {pc}%" for fr, pc in pr["self_pct"][:8])
                    notes.append(f"{w} logd {mode} profile ({pr['samples']} samples, {pr['file']}; py-spy slows the "
                                 f"server, so this run's logd figures are disturbed): top self: {top}")
    if notes:
        print()
        print("\n".join(notes))
    out = {"started": t0, "elapsed_s": time.time() - t0, "argv": sys.argv, "plan": p, "environment": env,
           "table": records, "results": results}
    path = os.path.join(args.results_dir, f"bench-{stamp}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=str)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
