"""``logd failover`` on real processes: A a primary, B a read replica over the
directory of a logd-follower of A. Each failure path leaves the documented
state and exit code; ``--abort`` gives A its writes back unless B was promoted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

import pytest

import logd
from logd import failover
from logd.errors import Refused

from .test_failover_commands import head_of, meta, wait_for, write

pytestmark = pytest.mark.integration


def run_failover(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logd", "failover", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def stats_of(addr: str) -> dict[str, Any]:
    with logd.connect(addr) as client:
        return client.stats()


def replica_pair(logd_server, follower, *follower_flags: str, n: int = 30):
    """A with ``n`` messages, its follower caught up, B serving the follower's directory."""
    a = logd_server()
    write(a.addr, n)
    f = follower(a.addr, "--max-backoff", "0.5", *follower_flags)
    wait_for(lambda: head_of(f.data_dir) == n, 30, "the follower to catch up")
    b = logd_server("--refuse", data_dir=f.data_dir)
    wait_for(lambda: stats_of(b.addr).get("link") == "streaming", 30, "B's follower status to say streaming")
    return a, f, b


def steps(out: str) -> list[str]:
    """The step tags printed (``[1/6]`` ...), in order."""
    return [line.split("]")[0] + "]" for line in out.splitlines() if line.startswith("[")]


def test_b_unreachable_changes_nothing(logd_server, follower) -> None:
    a = logd_server()
    write(a.addr, 5)
    before = (a.data_dir / "meta").read_bytes()
    out = run_failover("--from", a.addr, "--to", "127.0.0.1:1")
    assert out.returncode == failover.EXIT_UNREACHABLE == 10, out
    assert out.stdout.splitlines() == [
        "FAILED: cannot reach B 127.0.0.1:1: CONNECTION cannot connect to 127.0.0.1:1: "
        "[Errno 111] Connection refused",
        f"state: nothing was changed: A {a.addr} is still the primary",
        "next: start B's read replica (logd serve --refuse) or fix --to, then retry"]
    assert "(exit 10)" in out.stderr
    assert (a.data_dir / "meta").read_bytes() == before
    assert write(a.addr, 1) == [range(6, 7)]
    assert stats_of(a.addr)["role"] == "primary"


def test_b_not_a_replica_of_a_changes_nothing(logd_server) -> None:
    a, other = logd_server(), logd_server()
    out = run_failover("--from", a.addr, "--to", other.addr)
    assert out.returncode == failover.EXIT_PRECHECK == 11, out
    assert out.stdout.startswith(f"FAILED: B ({other.addr}) is not a read replica: role 'primary'\n")
    assert stats_of(a.addr)["role"] == "primary" and stats_of(other.addr)["role"] == "primary"


def test_b_not_catching_up_leaves_a_refusing_and_abort_restores_it(logd_server, follower) -> None:
    a, f, b = replica_pair(logd_server, follower)
    assert f.proc is not None
    os.kill(f.proc.pid, signal.SIGSTOP)  # the follower copies nothing more
    try:
        write(a.addr, 10)  # ids 31..40: B never gets them
        out = run_failover("--from", a.addr, "--to", b.addr, "--timeout", "2")
        assert out.returncode == failover.EXIT_NOT_CAUGHT_UP == 13, out
        lines = out.stdout.splitlines()
        assert steps(out.stdout) == ["[1/6]", "[2/6]"]
        assert lines[1] == (f"[2/6] refuse: A {a.addr} refuses writes, naming B {b.addr} as the new "
                            "primary; final id 40 (fsynced)")
        assert lines[2].startswith("FAILED: B did not have id 40 fsynced within the timeout "
                                   "(follower_fsynced 1:"), lines[2]
        assert lines[2].split("follower_fsynced ")[1].split(",")[0].endswith(":30")
        assert lines[3] == (f"state: A {a.addr} is refusing writes (safe: no write is lost or forks); "
                            f"its final id is 40; B {b.addr} is still a read replica")
        assert f"logd failover --abort --from {a.addr} --to {b.addr}" in lines[4]
        # A refuses, naming B; B is untouched.
        with logd.connect(a.addr) as client:
            with pytest.raises(Refused) as info:
                client.append(b"x")
            assert info.value.primary == b.addr
        assert meta(a.data_dir)["role"] == "refusing" and meta(a.data_dir)["primary"] == b.addr
        assert stats_of(b.addr)["role"] == "replica"
        # --abort: B is still a replica, so A takes writes again, in epoch 2.
        out = run_failover("--abort", "--from", a.addr, "--to", b.addr)
        assert out.returncode == 0, out
        assert out.stdout.splitlines() == [
            f"abort: B {b.addr} is still a read replica (epoch 1): not promoted",
            f"abort: A {a.addr} takes writes again in a new epoch 2 (first id 41); B's follower "
            "resumes from A (restart it if it stopped)"]
        assert write(a.addr, 1) == [range(41, 42)]
        assert meta(a.data_dir)["epochs"] == [[1, 1], [2, 41]]
    finally:
        os.kill(f.proc.pid, signal.SIGCONT)
    # The follower resumes from A, in A's new epoch.
    wait_for(lambda: head_of(f.data_dir) == 41, 30, "the follower to resume from A")


def test_follower_without_advertise_never_stops_accept_keeps_failing(logd_server, follower) -> None:
    """The fence is the follower's: one that cannot recognise B (no --advertise)
    keeps the lock, so ACCEPT is refused until --timeout; A is left refusing."""
    a, f, b = replica_pair(logd_server, follower)
    out = run_failover("--from", a.addr, "--to", b.addr, "--timeout", "3")
    assert out.returncode == failover.EXIT_NOT_FENCED == 14, out
    lines = out.stdout.splitlines()
    assert steps(out.stdout) == ["[1/6]", "[2/6]", "[3/6]"]
    assert lines[1].endswith("final id 30 (fsynced)")
    assert lines[2].startswith("[3/6] catch up: B has id 30 fsynced (follower_fsynced 1:")
    assert lines[3].startswith("FAILED: B's follower did not release the directory within the timeout (")
    assert "ACCEPTs refused: data directory " in lines[3] and "logd-follower" in lines[3]
    assert lines[3].endswith(f"it stops by itself only when started with --advertise {b.addr}")
    assert lines[4] == (f"state: A {a.addr} is refusing writes (safe: no write is lost or forks); its "
                        f"final id is 30; B {b.addr} is still a read replica, its follower still "
                        "holding the directory")
    assert f"`logd accept -H {b.addr}`" in lines[5]
    assert f.proc is not None and f.proc.poll() is None  # nothing killed it
    assert stats_of(a.addr)["role"] == "refusing" and stats_of(b.addr)["role"] == "replica"
    # What `next:` says works: stop B's follower yourself, ACCEPT B; --abort is then refused.
    assert f.stop() == 0
    with logd.connect(b.addr) as client:
        assert client.accept() == (2, 31, True)
    out = run_failover("--abort", "--from", a.addr, "--to", b.addr)
    assert out.returncode == failover.EXIT_ABORT_REFUSED == 16, out
    assert out.stdout.startswith(f"FAILED: B {b.addr} was promoted (role 'primary', epoch 2): giving A "
                                 "its writes back would make two primaries\n")
    assert stats_of(a.addr)["role"] == "refusing"


def test_usage_errors_exit_2() -> None:
    out = run_failover("--from", "127.0.0.1:1")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == "logd failover: --to HOST:PORT is required (or --abort)\n"
