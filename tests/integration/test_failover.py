"""``logd failover`` on real processes: A a primary, B a read replica over the
directory of a logd-follower of A. Each failure path leaves the documented
state and exit code; ``--abort`` gives A its writes back unless B was promoted."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import logd
from logd import failover
from logd.errors import Refused

from .test_failover_commands import head_of, meta, wait_for, write

pytestmark = pytest.mark.integration


def run_failover(*args: str, timeout: float = 60,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "LOGD_ADMIN_TOKEN"}
    return subprocess.run([sys.executable, "-m", "logd", "failover", *args], capture_output=True,
                          text=True, timeout=timeout, env={**environ, **(env or {})})


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
    wait_for(lambda: failover.fsynced_id(stats_of(b.addr)) == n, 30, f"B's status to say {n} fsynced")
    return a, f, b


def advertised_pair(logd_server, follower, n: int = 30):
    """As ``replica_pair``, but B's follower runs with ``--advertise B`` (the
    contract: it then exits when A refuses naming B). B's port is known only
    once B runs, so the copy is made first and the follower restarted with it."""
    a, f, b = replica_pair(logd_server, follower, n=n)
    assert f.stop() == 0
    f = follower(a.addr, "--max-backoff", "0.5", "--advertise", b.addr, data_dir=f.data_dir)
    wait_for(lambda: b.addr in meta(a.data_dir).get("followers", []), 30,
             "A to record the follower's advertised address")
    # The first follower's status said "stopped" on its way out: wait for the new one's.
    wait_for(lambda: (st := stats_of(b.addr))["link"] == "streaming" and failover.fsynced_id(st) == n,
             30, "B's status to name the restarted follower streaming")
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
    a, f, b = advertised_pair(logd_server, follower)
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
    # Let go, the follower finds A's +REFUSED 40 B in its socket: it copies to 40 and
    # hands over (exit 0), though B was not promoted. Restarted, it follows A again,
    # in A's new epoch, as --abort says.
    assert f.wait_exit(20) == 0
    assert head_of(f.data_dir) == 40
    follower(a.addr, "--max-backoff", "0.5", "--advertise", b.addr, data_dir=f.data_dir)
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


def test_the_admin_token_comes_from_the_environment(logd_server, follower, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    a = logd_server("--admin-from", "none", "--admin-token-file", str(token))
    write(a.addr, 5)
    f = follower(a.addr, "--max-backoff", "0.5")
    wait_for(lambda: head_of(f.data_dir) == 5, 30, "the follower to catch up")
    b = logd_server("--refuse", "--admin-from", "none", "--admin-token-file", str(token),
                    data_dir=f.data_dir)
    wait_for(lambda: stats_of(b.addr).get("link") == "streaming", 30, "B's follower to stream")
    out = run_failover("--from", a.addr, "--to", b.addr)
    assert out.returncode == failover.EXIT_REFUSE_FAILED == 12, out
    assert out.stdout.splitlines()[1:] == [
        "FAILED: REFUSE on A failed: FORBIDDEN REFUSE is accepted only from the unix socket, or after "
        "AUTH with the admin token",
        "state: nothing was changed (A answered with an error)",
        "next: fix what the error says (the admin token: $LOGD_ADMIN_TOKEN) and retry"]
    assert stats_of(a.addr)["role"] == "primary"
    out = run_failover("--from", a.addr, "--to", b.addr, "--timeout", "1", env={"LOGD_ADMIN_TOKEN": "s3cret"})
    assert out.returncode == failover.EXIT_NOT_FENCED, out  # REFUSE and ACCEPT were sent with it
    out = run_failover("--abort", "--from", a.addr, "--to", b.addr, env={"LOGD_ADMIN_TOKEN": "s3cret"})
    assert out.returncode == 0, out
    assert stats_of(a.addr)["role"] == "primary"


def test_usage_errors_exit_2() -> None:
    out = run_failover("--from", "127.0.0.1:1")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == "logd failover: --to HOST:PORT is required (or --abort)\n"


# -- the planned failover end to end, under writes ------------------------------------------


class Writer(threading.Thread):
    """Pipelined appends of unique bodies (``w<k>-<seq>``) to A, in batches of
    ``BATCH``; refused ones go, unchanged, to the server the refusal names,
    retried there while it still refuses (a replica not yet promoted)."""

    BATCH = 10

    def __init__(self, k: int, addr: str, after_move: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.k, self.addr, self.after_move, self.deadline = k, addr, after_move, deadline
        self.acked: list[tuple[int, bytes, str]] = []  # (id, body, server), in send order
        self.refusals: list[str | None] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # the test reports it
            self.error = exc

    def _run(self) -> None:
        client, target, seq, moved_at = logd.connect(self.addr), self.addr, 0, -1
        pending: list[bytes] = []
        while time.monotonic() < self.deadline:
            if moved_at >= 0 and len(self.acked) - moved_at >= self.after_move:
                break
            while len(pending) < self.BATCH:
                pending.append(f"w{self.k}-{seq}".encode())
                seq += 1
            p = client.pipeline()
            for body in pending:
                p.append(body)
            results = p.execute(raise_on_error=False)
            refused = []
            for body, r in zip(pending, results):
                if isinstance(r, range):
                    assert not refused, "a MSG was taken after one before it was refused"
                    self.acked.append((r.start, body, target))
                elif isinstance(r, Refused):
                    refused.append(body)
                    if r.primary and r.primary != target and target == self.addr:
                        self.refusals.append(r.primary)
                else:
                    raise r
            pending = refused  # refused MSGs changed nothing: send them again, in order
            if refused and target == self.addr and self.refusals:
                client.close()
                target = self.refusals[-1]
                client = logd.connect(target)
                moved_at = len(self.acked)
            elif refused:
                time.sleep(0.02)  # B refuses until it accepts
        client.close()
        assert moved_at >= 0, f"writer {self.k} was never moved to B"


def all_records(addr: str) -> list[tuple[int, bytes]]:
    with logd.connect(addr) as client:
        head = client.head()
        return [(r.id, r.body) for r in client.read(1, head)] if head else []


def test_planned_failover_under_writes_loses_nothing_and_continues_the_ids(logd_server, follower) -> None:
    a, f, b = advertised_pair(logd_server, follower)
    writers = [Writer(k, a.addr, after_move=100, deadline=time.monotonic() + 90) for k in range(4)]
    for w in writers:
        w.start()
    wait_for(lambda: all(len(w.acked) >= 50 for w in writers), 30, "every writer to get going")
    out = run_failover("--from", a.addr, "--to", b.addr, "--timeout", "30")
    for w in writers:
        w.join(100)
        assert not w.is_alive() and w.error is None, (w.k, w.error)
    assert out.returncode == 0, out
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert steps(out.stdout) == [f"[{i}/6]" for i in range(1, 7)], out.stdout
    final = int(re.fullmatch(rf"\[2/6\] refuse: A {a.addr} refuses writes, naming B {b.addr} as the "
                             r"new primary; final id (\d+) \(fsynced\)", lines[1]).group(1))
    assert re.fullmatch(rf"\[3/6\] catch up: B has id {final} fsynced \(follower_fsynced \d+:\d+:{final}, "
                        rf"visible head {final}\) after [\d.]+s", lines[2]), lines[2]
    assert re.fullmatch(r"\[4/6\] fence: B's follower released the directory after [\d.]+s \(\d+ "
                        r"ACCEPTs? refused while it held the lock\)", lines[3]), lines[3]
    assert lines[4] == f"[5/6] accept: B {b.addr} takes writes: epoch 2, first id {final + 1}"
    m = re.fullmatch(rf"\[6/6\] done: the new primary is {b.addr}, epoch 2; head ids: A {a.addr} "
                     rf"{final} \(refusing, names B\), B {b.addr} {final} when it accepted "
                     rf"\((\d+) now\); A's final id was {final}", lines[5])
    assert m and int(m.group(1)) >= final, lines[5]
    # The follower handed over by itself (exit 0), and nothing else stopped it.
    assert f.wait_exit(10) == 0
    # Every acknowledged message is on B exactly once, at its acknowledged id; B's
    # ids run 1..head with no gap (the client checks the sequence); A has 1..final.
    on_b = all_records(b.addr)
    assert [i for i, _ in on_b] == list(range(1, len(on_b) + 1))
    by_id = dict(on_b)
    acked = [(i, body) for w in writers for i, body, _ in w.acked]
    assert all(by_id.get(i) == body for i, body in acked), "an acknowledged message is missing or moved"
    bodies = [body for _, body in on_b if body.startswith(b"w")]
    assert len(bodies) == len(set(bodies)) == len(acked), "a message is on B twice, or one not acked"
    for w in writers:
        ids = [i for i, _, _ in w.acked]
        assert ids == sorted(ids), f"writer {w.k}'s messages are out of order"
        servers = [s for _, _, s in w.acked]
        assert servers == sorted(servers, key=lambda s: s == b.addr)  # A's first, then B's
        assert w.refusals and set(w.refusals) == {b.addr}  # the refusal named B
        assert all(i <= final for i, _, s in w.acked if s == a.addr)
        assert all(i > final for i, _, s in w.acked if s == b.addr)
    assert min(i for w in writers for i, _, s in w.acked if s == b.addr) == final + 1  # no gap
    assert all_records(a.addr) == on_b[:final]
    st_a, st_b = stats_of(a.addr), stats_of(b.addr)
    assert (st_a["role"], st_a["new_primary"], st_a["head"]) == ("refusing", b.addr, final)
    assert (st_b["role"], st_b["epoch"], st_b["epochs"]) == ("primary", 2, f"1:1 2:{final + 1}")
    # A then follows B (stopped cleanly, a follower over its directory) and ends byte-identical.
    assert a.stop() == 0
    fa = follower(b.addr, "--max-backoff", "0.5", data_dir=a.data_dir)
    head_b = stats_of(b.addr)["head"]
    wait_for(lambda: head_of(a.data_dir) == head_b, 30, "A's directory to catch up with B")
    assert fa.stop() == 0
    assert partition_hashes(a.data_dir) == partition_hashes(b.data_dir)


def partition_hashes(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.log"))}


def test_a_follower_stopped_after_catching_up_fails_the_fence_and_a_rerun_finishes(logd_server,
                                                                                   follower) -> None:
    """SIGSTOP the (advertising) follower once it has everything: ACCEPT keeps
    failing with the lock error until --timeout (exit 14, A refusing); once it
    runs again it hands over by itself, and the same command, run again, goes
    on from the refusing A and finishes."""
    a, f, b = advertised_pair(logd_server, follower)
    assert f.proc is not None
    os.kill(f.proc.pid, signal.SIGSTOP)
    try:
        out = run_failover("--from", a.addr, "--to", b.addr, "--timeout", "2")
        assert out.returncode == failover.EXIT_NOT_FENCED, out
        assert steps(out.stdout) == ["[1/6]", "[2/6]", "[3/6]"]
        assert "FAILED: B's follower did not release the directory within the timeout" in out.stdout
        assert stats_of(a.addr)["role"] == "refusing" and stats_of(b.addr)["role"] == "replica"
    finally:
        os.kill(f.proc.pid, signal.SIGCONT)
    assert f.wait_exit(20) == 0  # it gets +REFUSED 30 B and hands over
    out = run_failover("--from", a.addr, "--to", b.addr, "--timeout", "10")
    assert out.returncode == 0, out
    assert out.stdout.startswith(f"[1/6] check: A {a.addr} is already refusing, naming B (a failover "
                                 "run again)")
    assert f"[5/6] accept: B {b.addr} takes writes: epoch 2, first id 31\n" in out.stdout
    assert write(b.addr, 1) == [range(31, 32)]
