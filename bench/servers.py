"""Start and stop the servers under test: logd and redis-server.

Every server runs in its own temporary directory, on 127.0.0.1 and a free
port, and is stopped by PID (SIGTERM, then SIGKILL after a timeout). Nothing
here waits without a bound.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The two like-for-like durability pairs: (name, logd --fsync, redis --appendfsync)
MODES = {
    "always": ("always", "always"),
    "interval": ("interval:1000", "everysec"),
}

MAXCLIENTS = 10_000  # Redis's default, said explicitly; logd's --max-clients default is the same
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of every thread of ``pid`` (fsync threads included); with
    ``children``, plus its reaped children's (Redis's fork for a full sync)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _stop_pid(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        return proc.poll()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            return None


class Server:
    """A running server: ``system``, ``mode``, ``port``, ``pid``; ``stop()`` is idempotent."""

    system = "?"
    count_children = False  # add reaped children's CPU (Redis forks for replication)

    def __init__(self, mode: str, tmp_base: str | None) -> None:
        self.mode = mode
        self.dir = tempfile.mkdtemp(prefix=f"logd-bench-{self.system}-{mode}-", dir=tmp_base)
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log_path = os.path.join(self.dir, "server.log")
        self._log = None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid, self.count_children)

    def rss_mib(self) -> float:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def disk_mib(self) -> float:
        total = 0
        for root, _dirs, files in os.walk(self.dir):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:
                    pass
        return total / (1 << 20)

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def events(self) -> list[dict]:
        """The JSON log lines written so far (logd, logd-follower)."""
        out = []
        try:
            with open(self.log_path, "rb") as f:
                for raw in f:
                    line = raw.strip()
                    if line.startswith(b"{"):
                        try:
                            out.append(json.loads(line))
                        except ValueError:
                            pass
        except OSError:
            pass
        return out

    def _spawn(self, argv: list[str], env: dict | None = None) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=str(REPO), env=env, start_new_session=True,
        )

    def _check_alive(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"{what} exited with {self.proc.returncode} while starting:\n{self.log_tail()}")

    def stop(self) -> None:
        """Graceful stop (SIGTERM) by PID, SIGKILL past the timeout; remove the temp dir."""
        if self.proc is not None:
            self.exit_code = _stop_pid(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir and os.path.isdir(self.dir):
            keep = os.environ.get("BENCH_KEEP_DIRS")
            if not keep:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LogdServer(Server):
    system = "logd"

    def __init__(self, mode: str, tmp_base: str | None = None, cmd: str | None = None,
                 extra: list[str] | None = None, data_dir: str | None = None) -> None:
        """``data_dir``: serve that directory (a read replica on a follower's copy,
        with ``--refuse`` in ``extra``) instead of a new one in the temp dir."""
        super().__init__(mode, tmp_base)
        fsync = MODES[mode][0]
        base = shlex.split(cmd) if cmd else [sys.executable, "-m", "logd"]
        self.data = data_dir or os.path.join(self.dir, "data")
        argv = base + ["serve", "--port", "0", "--data-dir", self.data,
                       "--fsync", fsync] + list(extra or [])
        self.argv = argv
        self._spawn(argv, _python_env())
        try:
            self.port = self._wait_listening()
        except BaseException:
            self.stop()  # it exited (a flag it rejects): its temp dir goes too
            raise

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive("logd")
            for ev in self.events():
                if ev.get("event") == "listening" and ev.get("port"):
                    return int(ev["port"])
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"logd did not log a 'listening' event within {START_TIMEOUT}s")


def _python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LogdFollower(Server):
    """``logd-follower --primary 127.0.0.1:<port> --data-dir <tmp>/copy`` with the mode's --fsync.

    No port: it is ready when it runs; ``data`` is its copy (a read replica can serve it).
    """

    system = "logd-follower"

    def __init__(self, mode: str, primary_port: int, tmp_base: str | None = None, cmd: str | None = None,
                 extra: list[str] | None = None) -> None:
        super().__init__(mode, tmp_base)
        base = shlex.split(cmd) if cmd else [sys.executable, "-m", "follower"]
        self.data = os.path.join(self.dir, "copy")
        self.argv = base + ["--primary", f"127.0.0.1:{primary_port}", "--data-dir", self.data,
                            "--fsync", MODES[mode][0], "--name", "bench"] + list(extra or [])
        self.spawned_at = time.perf_counter()
        self._spawn(self.argv, _python_env())

    def wait_started(self, timeout: float = START_TIMEOUT) -> None:
        """Until it logs ``follower_started`` (its copy is open, meta written)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive("logd-follower")
            if any(ev.get("event") == "follower_started" for ev in self.events()):
                return
            time.sleep(0.02)
        raise ServerError(f"logd-follower did not start within {timeout}s:\n{self.log_tail()}")


def redis_binary(install: bool = True) -> str:
    path = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if path:
        return path
    if not install:
        raise ServerError("redis-server not found")
    print("redis-server not found; installing it with apt-get", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run(sudo + ["apt-get", "install", "-y", "redis-server"], env=env, timeout=600, check=False)
    path = shutil.which("redis-server")
    if not path:
        subprocess.run(sudo + ["apt-get", "update"], env=env, timeout=600, check=False)
        subprocess.run(sudo + ["apt-get", "install", "-y", "redis-server"], env=env, timeout=600, check=False)
        path = shutil.which("redis-server")
    if not path:
        raise ServerError("could not install redis-server (apt-get install -y redis-server)")
    return path


class RedisServer(Server):
    system = "redis"
    count_children = True

    def __init__(self, mode: str, tmp_base: str | None = None, extra: list[str] | None = None) -> None:
        super().__init__(mode, tmp_base)
        binary = redis_binary()
        appendfsync = MODES[mode][1]
        last = None
        for _attempt in range(3):
            self.port = free_port()
            argv = [
                binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
                "--daemonize", "no", "--protected-mode", "no", "--save", "",
                "--appendonly", "yes", "--appendfsync", appendfsync,
                # No background AOF rewrite (a fork that competes for the 2 cores) during
                # the run: logd has no compaction either. This only helps Redis.
                "--auto-aof-rewrite-percentage", "0",
                # W3 runs up to 1,024 connections; Redis lowers this itself to what RLIMIT_NOFILE
                # allows (run.py raises the soft limit to the hard one before starting servers)
                "--maxclients", str(MAXCLIENTS),
                "--logfile", "", "--loglevel", "notice",
            ] + list(extra or [])
            self.argv = argv
            self._spawn(argv)
            try:
                self._wait_ping()
                return
            except ServerError as e:
                last = e
                _stop_pid(self.proc)  # type: ignore[arg-type]
                if self._log:
                    self._log.close()
                    self._log = None
        self.stop()
        raise ServerError(f"redis-server would not start: {last}")

    def info(self, section: str) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n" % (len(section), section.encode()))
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                buf += chunk
                nl = buf.find(b"\r\n")
                if nl > 0 and len(buf) >= nl + 2 + int(buf[1:nl]) + 2:
                    return buf[nl + 2 : nl + 2 + int(buf[1:nl])].decode()

    def wait_aof_written(self, timeout: float = 60.0) -> float:
        """Until no AOF rewrite runs or is scheduled (a replica rewrites its AOF after a full
        sync, and ignores SIGTERM until that is done); seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                text = self.info("persistence")
            except OSError:
                break
            if "aof_rewrite_in_progress:0" in text and "aof_rewrite_scheduled:0" in text:
                break
            time.sleep(0.01)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.wait_aof_written()
        super().stop()

    def _wait_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive("redis-server")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"*1\r\n$4\r\nPING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise ServerError(f"redis-server did not answer PING within {START_TIMEOUT}s")


class Profiler:
    """``py-spy record --pid`` attached to the logd server for one workload.

    Writes raw collapsed stacks (``--format raw``); ``summary()`` lists the
    functions with the most samples, self and inclusive.
    """

    def __init__(self, pid: int, out: str, rate: int = 200) -> None:
        self.out = out
        self.proc: subprocess.Popen | None = None
        exe = shutil.which("py-spy")
        if exe is None:
            raise ServerError("py-spy is not installed (pip install py-spy)")
        self.log = open(out + ".log", "wb")
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "-o", out],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        time.sleep(0.5)  # let it attach before the load starts
        if self.proc.poll() is not None:
            self.log.close()
            raise ServerError(f"py-spy exited with {self.proc.returncode}; see {out}.log")

    def stop(self) -> None:
        if self.proc is not None:
            _stop_pid(self.proc, signal.SIGINT, timeout=30)
            self.proc = None
            self.log.close()

    def summary(self, top: int = 15) -> dict:
        self_counts: dict[str, int] = {}
        incl: dict[str, int] = {}
        total = 0
        try:
            with open(self.out) as f:
                for line in f:
                    stack, _, n = line.rstrip("\n").rpartition(" ")
                    if not n.isdigit():
                        continue
                    k = int(n)
                    total += k
                    frames = stack.split(";")
                    self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + k
                    for fr in set(frames):
                        incl[fr] = incl.get(fr, 0) + k
        except OSError:
            return {"samples": 0}

        def pct(d: dict[str, int]) -> list:
            return [[fr, round(100 * k / total, 1)] for fr, k in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

        if not total:
            return {"samples": 0, "file": self.out}
        return {"samples": total, "file": self.out, "self_pct": pct(self_counts), "inclusive_pct": pct(incl)}
