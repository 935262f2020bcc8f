"""Real ``logd serve`` processes on 127.0.0.1, port 0, a temporary data dir.

``logd_server(*flags, data_dir=None, nofile=None, env=None, notify="path")``
starts one (``nofile``: a (soft, hard) RLIMIT_NOFILE to start it with;
``env``: variables to add to its environment) and waits, as systemd's
``Type=notify`` does, for ``READY=1`` from its pid on a ``$NOTIFY_SOCKET``
the fixture owns (``server.notify``, notify.py; ``notify="abstract"`` binds
an ``@name``), then for its ``listening`` log line (which carries the bound
port). So every test exercises the notify path. Only a test that sets its
own ``NOTIFY_SOCKET`` in ``env`` is waited for by the ``listening`` line
alone: its READY goes to the test's socket. Everything the server logs is
kept in ``server.logs`` as dicts.

At teardown every server must have exited 0: one still running gets SIGTERM
and must exit 0 (the graceful stop), one that exited by itself must have
exited 0 (SHUTDOWN), or the test fails with its last log lines. A process the
test ended itself (``kill()``, ``stop(sig)``, ``restart()``) is the test's to
judge: it saw the exit code.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .notify import NotifySocket

STARTUP_TIMEOUT = 15.0


def _log_lines(proc: subprocess.Popen[bytes], logs: list[dict[str, Any]],
               lock: threading.Lock) -> Iterator[dict[str, Any]]:
    """Each JSON line ``proc`` writes to stderr, kept in ``logs``; other lines as ``stderr`` events."""
    assert proc.stderr is not None
    for raw in proc.stderr:
        try:
            entry = json.loads(raw)
        except ValueError:
            entry = {"event": "stderr", "line": raw.decode(errors="replace").rstrip()}
        with lock:
            logs.append(entry)
        yield entry


class LogdServer:
    def __init__(self, data_dir: Path, flags: tuple[str, ...], nofile: tuple[int, int] | None = None,
                 env: dict[str, str] | None = None, notify: str = "path") -> None:
        self.data_dir = data_dir
        self.notify = NotifySocket(notify)
        self.own_notify = not (env and "NOTIFY_SOCKET" in env)
        self.env = {"NOTIFY_SOCKET": self.notify.address, **(env or {})}
        self.flags = flags
        self.nofile = nofile  # (soft, hard) RLIMIT_NOFILE for the process
        self.proc: subprocess.Popen[bytes] | None = None
        self.procs: list[subprocess.Popen[bytes]] = []  # every process started
        self.ended_by_test: set[int] = set()  # pids the test stopped or killed itself
        self.logs: list[dict[str, Any]] = []
        self.host = "127.0.0.1"
        self.port = 0
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._pumps: list[threading.Thread] = []  # one stderr reader per process

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "LogdServer":
        listening = self._listening = threading.Event()  # one per process: an old
        # process's reader thread must not wake a start() of the next one.
        cmd = [sys.executable, "-m", "logd", "serve", "--port", "0", "--data-dir", str(self.data_dir),
               "--log-format", "json", *self.flags]
        nofile = self.nofile
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True, preexec_fn=limit,
                                     env={**os.environ, **self.env})
        self.procs.append(self.proc)
        pump = threading.Thread(target=self._pump, args=(self.proc, listening), daemon=True)
        self._pumps.append(pump)
        pump.start()
        proc = self.proc
        try:
            if self.own_notify:
                self.notify.until("READY=1", STARTUP_TIMEOUT, pid=proc.pid, alive=lambda: proc.poll() is None)
        except AssertionError as exc:
            self.kill()
            raise RuntimeError(f"logd did not start: {exc}; {self.logs[-5:]}") from None
        # READY=1 follows the listening line, whose reader thread may lag the datagram a little.
        if not listening.wait(STARTUP_TIMEOUT) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"logd did not start: {self.logs[-5:]}")
        return self

    def _pump(self, proc: subprocess.Popen[bytes], listening: threading.Event) -> None:
        for entry in _log_lines(proc, self.logs, self._lock):
            if entry.get("event") == "listening" and "port" in entry:
                self.host, self.port = entry["host"], entry["port"]
                listening.set()
        listening.set()  # exited: let start() fail fast instead of waiting

    def events(self, name: str) -> list[dict[str, Any]]:
        if self.proc is not None and self.proc.poll() is not None:
            # Exited: its last lines may still be in the pipe. Read them all
            # first, so a test that waited for the exit sees every line.
            for pump in self._pumps:
                pump.join(5.0)
        with self._lock:
            return [e for e in self.logs if e.get("event") == name]

    def wait_event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no {name!r} log event within {timeout}s")

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait; returns the exit code."""
        assert self.proc is not None
        self.ended_by_test.add(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"logd did not exit within {timeout}s of signal {sig}")

    def kill(self) -> None:
        if self.proc is not None:
            self.ended_by_test.add(self.proc.pid)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def teardown(self) -> list[str]:
        """Stop what still runs; one line per process that did not exit 0."""
        problems = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(15)
                except subprocess.TimeoutExpired:
                    code = None
                finally:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(10)
                if code != 0:
                    problems.append(f"logd pid {proc.pid} "
                                    + ("did not stop within 15 s of SIGTERM" if code is None
                                       else f"exited {code} on SIGTERM at teardown"))
            elif proc.returncode != 0 and proc.pid not in self.ended_by_test:
                problems.append(f"logd pid {proc.pid} exited {proc.returncode} by itself")
        self.notify.close()
        if problems:
            with self._lock:
                tail = self.logs[-10:]
            problems.append("its last log lines:\n" + "\n".join(f"  {json.dumps(e)}" for e in tail))
        return problems

    def restart(self, *flags: str) -> "LogdServer":
        if self.proc is not None and self.proc.poll() is None:
            code = self.stop()
            assert code == 0, f"logd exited {code} on SIGTERM"
        if flags:
            self.flags = flags
        return self.start()


@pytest.fixture
def logd_server(tmp_path: Path) -> Iterator[Callable[..., LogdServer]]:
    servers: list[LogdServer] = []

    def start(*flags: str, data_dir: Path | str | None = None, nofile: tuple[int, int] | None = None,
              env: dict[str, str] | None = None, notify: str = "path") -> LogdServer:
        directory = Path(data_dir) if data_dir else tmp_path / f"data{len(servers)}"
        server = LogdServer(directory, flags, nofile, env, notify)
        servers.append(server)
        return server.start()

    yield start
    problems = []
    for server in servers:
        problems.extend(server.teardown())
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# -- logd-follower processes (the replication issue) ----------------------------------


class Follower:
    """One ``python -m follower`` process copying ``primary`` into ``data_dir``;
    its JSON log lines are kept in ``logs``, what it tells ``$NOTIFY_SOCKET``
    in ``notify`` (``wait_ready()``: its READY=1). Restartable; the test judges exits."""

    def __init__(self, primary: str, data_dir: Path, flags: tuple[str, ...]) -> None:
        self.notify = NotifySocket()
        self.primary = primary
        self.data_dir = data_dir
        self.flags = flags
        self.proc: subprocess.Popen[bytes] | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def start(self) -> "Follower":
        cmd = [sys.executable, "-m", "follower", "--primary", self.primary, "--data-dir",
               str(self.data_dir), "--log-format", "json", *self.flags]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True,
                                     env={**os.environ, "NOTIFY_SOCKET": self.notify.address})
        self.procs.append(self.proc)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> "Follower":
        """Until the current process sent READY=1 (its first handshake, or a copy to serve)."""
        proc = self.proc
        assert proc is not None
        self.notify.until("READY=1", timeout, pid=proc.pid, alive=lambda: proc.poll() is None)
        return self

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        for _ in _log_lines(proc, self.logs, self._lock):
            pass

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.logs if e.get("event") == name]

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def teardown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.notify.close()


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Callable[..., Follower]]:
    """``follower(primary_addr, *flags, data_dir=None)`` starts a logd-follower."""
    started: list[Follower] = []

    def start(primary: str, *flags: str, data_dir: Path | str | None = None) -> Follower:
        directory = Path(data_dir) if data_dir else tmp_path / f"copy{len(started)}"
        f = Follower(primary, directory, flags)
        started.append(f)
        return f.start()

    yield start
    for f in started:
        f.teardown()
