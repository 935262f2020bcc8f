"""The process base (logd/process.py) and sd_notify (logd/systemd.py), in this test process.

Real signals go to this process under gevent (os.kill), and notify messages
to a datagram socket the test owns, at a path and at an abstract name.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import uuid
from typing import Iterator

import gevent
import greenlet
import pytest

from logd import systemd
from logd.process import EXIT_OK, Halt, Notifier, Process

DEADLINE = 5.0


class Recorder(Process):
    """Records each handler call and the greenlet it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []
        self.halts: list[Halt] = []

    def _note(self, name: str) -> None:
        self.calls.append((name, greenlet.getcurrent()))

    def handle_hup(self) -> None:
        self._note("hup")

    def handle_int(self) -> None:
        self._note("int")

    def handle_term(self) -> None:
        self._note("term")
        raise Halt(3, "SIGTERM")

    def shutdown(self, halt: Halt) -> None:
        self.halts.append(halt)


def wait_until(cond, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < deadline, f"not within {DEADLINE}s: {what}"
        gevent.sleep(0.005)


def test_signals_are_dispatched_in_the_main_greenlet_in_order() -> None:
    main = greenlet.getcurrent()
    proc = Recorder()

    def sender() -> None:
        for sig, n in ((signal.SIGHUP, 1), (signal.SIGINT, 2), (signal.SIGHUP, 3), (signal.SIGTERM, 4)):
            os.kill(os.getpid(), sig)
            wait_until(lambda: len(proc.calls) >= n, f"handler {n}")

    before = {s: signal.getsignal(s) for s in Process.SIGNALS}
    g = gevent.spawn(sender)
    status = proc.run()
    g.join(DEADLINE)
    assert status == 3
    assert [name for name, _ in proc.calls] == ["hup", "int", "hup", "term"]
    assert all(where is main for _, where in proc.calls)
    assert [h.reason for h in proc.halts] == ["SIGTERM"]
    assert {s: signal.getsignal(s) for s in Process.SIGNALS} == before  # restored


def test_signals_during_a_startup_step_are_queued_in_arrival_order() -> None:
    """Nothing yields while startup blocks: the signals wait, recorded, for its next dispatch()."""

    class Starting(Recorder):
        def startup(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # 2 before 1: arrival order, not signal numbers
            os.kill(os.getpid(), signal.SIGHUP)
            assert self.calls == []  # recorded only
            self.dispatch()
            assert [name for name, _ in self.calls] == ["int", "hup"]
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # a long step with progress points, as recovery has
                self.dispatch()
            raise AssertionError("SIGTERM did not stop the startup step")

    proc = Starting()
    assert proc.run() == 3
    assert [name for name, _ in proc.calls] == ["int", "hup", "term"]


def test_default_handlers_stop_with_exit_0_and_hup_logs_reopen() -> None:
    from structlog.testing import capture_logs

    class Plain(Process):
        def __init__(self) -> None:
            super().__init__()
            self.halts: list[Halt] = []

        def shutdown(self, halt: Halt) -> None:
            self.halts.append(halt)

    for sig, reason in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
        proc = Plain()
        g = gevent.spawn(lambda: (os.kill(os.getpid(), signal.SIGHUP), gevent.sleep(0.05), os.kill(os.getpid(), sig)))
        with capture_logs() as logs:
            assert proc.run() == EXIT_OK
        g.join(DEADLINE)
        assert [h.reason for h in proc.halts] == [reason]
        assert [e["event"] for e in logs] == ["reopen"]


def test_request_halt_from_another_greenlet() -> None:
    proc = Recorder()
    g = gevent.spawn(lambda: (gevent.sleep(0.01), proc.request_halt(7, "asked")))
    assert proc.run() == 7
    g.join(DEADLINE)
    assert [h.reason for h in proc.halts] == ["asked"] and proc.calls == []


def test_a_halt_is_not_swallowed_by_except_exception() -> None:
    class Careless(Recorder):
        def startup(self) -> None:
            try:
                raise Halt(5, "startup failed")
            except Exception:  # noqa: BLE001 - what Halt must get through
                raise AssertionError("caught") from None

    assert Careless().run() == 5


# -- sd_notify --------------------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        directory = tempfile.mkdtemp(prefix="logd-notify-")  # short: sun_path holds 108 bytes
        addr = os.path.join(directory, "notify")
        sock.bind(addr)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
    else:
        name = f"logd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()
        if request.param == "path":
            os.unlink(addr)
            os.rmdir(directory)


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_notify_messages(notify_socket: socket.socket) -> None:
    n = Notifier()
    assert n.status("verifying partition 3")
    assert n.extend_timeout(10)
    assert n.ready("serving head=5")
    assert n.watchdog()
    assert n.stopping()
    assert received(notify_socket) == ["STATUS=verifying partition 3", "EXTEND_TIMEOUT_USEC=10000000",
                                       "READY=1\nSTATUS=serving head=5", "WATCHDOG=1", "STOPPING=1"]


def test_run_sends_ready_then_stopping(notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    class Serving(Recorder):
        def status(self) -> str:
            return "serving"

    proc = Serving()
    g = gevent.spawn(lambda: (gevent.sleep(0.01), proc.request_halt()))
    assert proc.run() == 0
    g.join(DEADLINE)
    assert received(notify_socket) == ["READY=1\nSTATUS=serving", "STOPPING=1"]


def test_no_ready_when_the_start_is_stopped(notify_socket: socket.socket) -> None:
    class Failing(Recorder):
        def startup(self) -> None:
            raise Halt(1, "startup failed")

    assert Failing().run() == 1
    assert received(notify_socket) == ["STOPPING=1"]


def test_watchdog_pings_from_the_main_loop(notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 0.1 s: a ping every 0.05 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    proc = Recorder()
    g = gevent.spawn(lambda: (gevent.sleep(0.3), proc.request_halt()))
    assert proc.run() == 0
    g.join(DEADLINE)
    got = received(notify_socket)
    assert got[0] == "READY=1" and got[-1] == "STOPPING=1"
    assert set(got[1:-1]) == {"WATCHDOG=1"} and len(got) - 2 >= 3, got


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert systemd.watchdog_interval() is None


def test_notify_without_a_usable_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert not systemd.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", f"@logd-nobody-{uuid.uuid4().hex}")  # nobody bound it
    assert not systemd.notify("READY=1")


# -- the daemon's recovery step ----------------------------------------------------------


def test_sigterm_during_recovery_stops_the_start(tmp_path, notify_socket: socket.socket) -> None:
    """The open's progress points dispatch signals: SIGTERM leaves the open, exit 0, no READY."""
    from structlog.testing import capture_logs

    from logd.config import ServerConfig
    from logd.daemon import Daemon
    from logd.log.file import FileLog

    data = tmp_path / "d"
    flog = FileLog(str(data), fsync=False)
    flog.append([b"x" * 100] * 50)
    flog.close()

    class Stopped(Daemon):
        def _recovery_progress(self, fields: dict[str, object]) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the open verifies
            super()._recovery_progress(fields)

    config = ServerConfig(port=0, data_dir=str(data), verify_on_start="full")  # type: ignore[arg-type]
    with capture_logs() as logs:
        assert Stopped(config).run() == 0
    events = [e["event"] for e in logs]
    assert "verifying" in events
    assert "log_opened" not in events and "listening" not in events
    got = received(notify_socket)
    assert got[0].startswith("STATUS=opening the log in ")
    assert got[1:3] == ["EXTEND_TIMEOUT_USEC=10000000", "STATUS=verifying partition 1 (0.0 of 0.0 MiB)"]
    assert got[3:] == ["STOPPING=1"]
    FileLog(str(data), fsync=False).close()  # the lock was released; the log opens as before


# -- READY later, STATUS when it changes, the watchdog's stuck check (issue 11) ----------


def test_ready_waits_for_set_ready_and_status_goes_out_when_it_changes(
        notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    class Later(Recorder):
        READY_AT_STARTUP = False
        text = "connecting"

        def status(self) -> str:
            return self.text

    proc = Later()

    before: list[str] = []

    def script() -> None:
        try:
            gevent.sleep(0.2)
            before.extend(received(notify_socket))
            proc.text = "streaming"
            proc.set_ready()
            wait_until(lambda: proc._ready_sent, "READY sent")
            proc.text = "streaming, head 5"  # changes: seen within a second
            gevent.sleep(1.3)
        finally:
            proc.request_halt()

    g = gevent.spawn(script)
    began = time.monotonic()
    assert proc.run() == 0
    g.join(DEADLINE)
    assert time.monotonic() - began >= 1.4
    assert before == ["STATUS=connecting"]  # systemctl status shows it while the unit is activating
    assert received(notify_socket) == ["READY=1\nSTATUS=streaming", "STATUS=streaming, head 5", "STOPPING=1"]


def test_a_stuck_process_gets_no_watchdog_pings(notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    from structlog.testing import capture_logs

    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    class Wedged(Recorder):
        why: str | None = None

        def stuck(self) -> str | None:
            return self.why

    proc = Wedged()
    phases: list[list[str]] = []

    def script() -> None:
        try:
            gevent.sleep(0.25)
            phases.append(received(notify_socket))
            proc.why = "an fsync has been running for 31.0s"
            gevent.sleep(0.06)  # a ping may be on its way as the flag is set
            received(notify_socket)
            gevent.sleep(0.3)
            phases.append(received(notify_socket))
            proc.why = None
            gevent.sleep(0.25)
            phases.append(received(notify_socket))
        finally:
            proc.request_halt()

    g = gevent.spawn(script)
    with capture_logs() as logs:
        assert proc.run() == 0
    g.join(DEADLINE)
    first, wedged, after = phases
    assert first[0] == "READY=1" and first.count("WATCHDOG=1") >= 3
    assert "WATCHDOG=1" not in wedged
    assert after.count("WATCHDOG=1") >= 2
    events = [(e["event"], e.get("reason", e.get("was"))) for e in logs]
    assert events == [("watchdog_withheld", "an fsync has been running for 31.0s"),
                      ("watchdog_resumed", "an fsync has been running for 31.0s")]


def test_in_flight_knows_the_oldest_running_call() -> None:
    from logd.process import InFlight

    now = [100.0]
    seen: list[float] = []

    def inner_call(fd: int) -> None:
        now[0] += 5.0
        seen.append(tracker.oldest())

    tracker = InFlight(inner_call, clock=lambda: now[0])
    assert tracker.oldest() == 0.0
    tracker(3)
    assert seen == [5.0] and tracker.oldest() == 0.0  # done: nothing in flight

    def failing(fd: int) -> None:
        raise OSError(5, "EIO")

    broken = InFlight(failing, clock=lambda: now[0])
    with pytest.raises(OSError):
        broken(3)
    assert broken.oldest() == 0.0  # a failed call is not left in flight
