"""The server's instructions per request, counted by callgrind: figures a noisy machine cannot move.

    python bench/instructions.py [-w W2|W3] [-m interval:1000|always] [--tree DIR]

Runs ``logd serve`` under ``valgrind --tool=callgrind`` twice, once for
``--small`` requests and once for ``--large`` (W2: one connection, one
100-byte MSG at a time; W3: 16 connections, one MSG in flight each, an
exact count in all), and prints (I(large) - I(small)) / (large - small):
the user-space instructions one request costs, start-up and shutdown
cancelled out. Kernel work (system calls, TCP) is not counted. ``--tree``
runs another checkout's code (``git worktree add /tmp/base <rev>``, with its
extension built in place: ``python setup.py build_ext --inplace``) to
compare before and after. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time

BODY = b"logd-bench-" * 9 + b"x"  # 100 bytes, as the other workloads
REQUEST = b"MSG 1\r\n%d %s\r\n" % (len(BODY), BODY)
DEADLINE = 600.0  # seconds for one run under valgrind, at most


def _wait_port(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"logd exited with {proc.returncode} under valgrind")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("logd did not listen in time under valgrind")


def _requests(port: int, conns: int, total: int, deadline: float) -> None:
    """``total`` MSGs over ``conns`` connections, one in flight on each; waits for every reply."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(conns)]
    sel = selectors.DefaultSelector()
    sent = done = 0
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sel.register(s, selectors.EVENT_READ)
        if sent < total:
            s.sendall(REQUEST)
            sent += 1
    while done < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{done} of {total} replies before the deadline")
        for key, _ in sel.select(5):
            data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            if not data:
                raise RuntimeError("logd closed a connection")
            if not data.startswith(b"OK "):
                raise RuntimeError(f"unexpected reply {data[:80]!r}")
            done += data.count(b"\r\n")
            if sent < total:
                key.fileobj.sendall(REQUEST)  # type: ignore[union-attr]
                sent += 1
    for s in socks:
        s.close()


def count(tree: str, mode: str, conns: int, total: int) -> int:
    """Instructions of one server run that served ``total`` requests."""
    with tempfile.TemporaryDirectory(prefix="logd-cg-") as tmp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, PYTHONPATH=tree)
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "logd",
               "serve", "--port", str(port), "--data-dir", os.path.join(tmp, "data"), "--fsync", mode]
        # cwd: "-m" puts the working directory first on sys.path, before PYTHONPATH
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + DEADLINE
            _wait_port(port, proc, deadline)
            _requests(port, conns, total, deadline)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
        with open(out) as f:
            m = re.search(r"^totals: (\d+)", f.read(), re.M)
        if m is None:
            raise RuntimeError("no totals in callgrind's output")
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-w", "--workload", choices=["W2", "W3"], default="W2")
    ap.add_argument("-m", "--mode", default="interval:1000", help="logd's --fsync")
    ap.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="the checkout whose logd runs (default: this one)")
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=3000)
    args = ap.parse_args()
    conns = 1 if args.workload == "W2" else 16
    small = count(args.tree, args.mode, conns, args.small)
    large = count(args.tree, args.mode, conns, args.large)
    per = (large - small) / (args.large - args.small)
    print(f"{args.workload} --fsync {args.mode} {args.tree}: {per:,.0f} instructions per request "
          f"({args.small} and {args.large} requests)")


if __name__ == "__main__":
    main()
