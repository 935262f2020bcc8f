"""Restart time of a large log: after a clean stop, and after kill -9 (issue 7, item 10).

Usage::

    python bench/restart.py --size 1GiB              # this tree's logd
    python bench/restart.py --size 1GiB --src /tmp/logd-old   # another source tree

Steps, each bounded by a timeout:

1. Fill a fresh data dir with ``--size`` of small records (``--body`` bytes
   each, 32 by default: about 64 bytes a record on disk, as in the issue's
   report) by appending through ``FileLog`` of the tree under test, batches of
   10,000, fsync off, then a clean close. This is not timed.
2. Start ``logd serve`` on it and time spawn -> the ``listening`` log line:
   the restart after a clean stop. Write one MSG of 1,000 records
   (``--fsync always``: acknowledged means durable), then ``kill -9``.
3. Start it again and time spawn -> ``listening``: the restart after a crash.
   Check that head is what was acknowledged, stop it with SIGTERM.

The data dir is deleted at the end unless ``--keep``. The data stays in the
page cache on a machine with enough memory, so these are warm-cache figures:
the cost measured is verification (CPU), not disk reads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 1800.0  # a full verification of 1 GiB of small records takes minutes


FILL = r"""
import sys, time
from logd.log.file import FileLog
directory, size, body_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
flog = FileLog(directory, fsync=False, verify="full")
n = 0
batch = [b"r" * body_len] * 10_000
t = time.monotonic()
while sum(p.size for p in flog.partitions()) < size:
    flog.append(batch)
    n += len(batch)
flog.close()
print(n, time.monotonic() - t)
"""


def env_for(src: Path) -> dict[str, str]:
    # `python -m` puts the working directory first on sys.path: both the cwd
    # and PYTHONPATH name the tree under test, so an installed logd is not used.
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src)
    return env


class Serve:
    def __init__(self, src: Path, data_dir: Path) -> None:
        self.began = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logd", "serve", "--port", "0", "--data-dir", str(data_dir),
             "--log-format", "json", "--fsync", "always"],
            env=env_for(src), cwd=src, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        self.ready = threading.Event()
        self.port = 0
        self.ready_at = 0.0
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "listening" and "port" in entry:
                self.port = entry["port"]
                self.ready_at = time.monotonic()
                self.ready.set()
        self.ready.set()

    def wait_ready(self) -> float:
        if not self.ready.wait(TIMEOUT) or not self.port:
            self.proc.kill()
            raise SystemExit("logd did not start:\n" + "\n".join(self.lines[-10:]))
        return self.ready_at - self.began

    def command(self, data: bytes, until: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
            s.sendall(data)
            buf = b""
            while until not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            return buf


def msg(bodies: list[bytes]) -> bytes:
    return b"MSG %d\r\n" % len(bodies) + b"".join(b"%d %s\r\n" % (len(b), b) for b in bodies)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--size", default="1GiB", help="log size to fill [1GiB]")
    ap.add_argument("--body", type=int, default=32, help="body bytes per record [32]")
    ap.add_argument("--src", default=str(REPO), help="source tree whose logd to run [this one]")
    ap.add_argument("--tmp-dir", default=None, help="where the data dir goes [$TMPDIR]")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    args = ap.parse_args()
    size = _size(args.size)
    src = Path(args.src).resolve()
    base = Path(tempfile.mkdtemp(prefix="logd-restart-", dir=args.tmp_dir))
    data = base / "data"
    try:
        out = subprocess.run([sys.executable, "-c", FILL, str(data), str(size), str(args.body)],
                             env=env_for(src), cwd=src, capture_output=True, check=True, timeout=TIMEOUT)
        records, fill_s = out.stdout.splitlines()[-1].split()
        mib = sum(p.stat().st_size for p in data.glob("*.log")) / (1 << 20)
        parts = len(list(data.glob("*.log")))
        print(f"filled {mib:.0f} MiB, {int(records):,} records, {parts} partitions in {float(fill_s):.1f} s")

        srv = Serve(src, data)
        clean = srv.wait_ready()
        print(f"restart after a clean stop: {clean:.2f} s")
        reply = srv.command(msg([b"after-clean %d" % i for i in range(1000)]), b"\r\n")
        assert reply.startswith(b"OK "), reply
        acked = int(reply[3:-2])
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(60)

        srv = Serve(src, data)
        crash = srv.wait_ready()
        print(f"restart after kill -9:      {crash:.2f} s")
        head = srv.command(b"HEAD 0\r\n", b"\r\n")
        assert head == b"OK %d\r\n" % acked, (head, acked)
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(120)
        assert code == 0, code
        print(json.dumps({"src": str(src), "mib": round(mib), "records": int(records),
                          "partitions": parts, "clean_s": round(clean, 2), "crash_s": round(crash, 2)}))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


def _size(text: str) -> int:
    t = text.strip().lower()
    for suffix, mult in (("gib", 1 << 30), ("mib", 1 << 20), ("kib", 1 << 10), ("g", 1 << 30),
                         ("m", 1 << 20), ("k", 1 << 10), ("", 1)):
        if t.endswith(suffix) and t[: len(t) - len(suffix)].isdigit():
            return int(t[: len(t) - len(suffix)]) * mult
    raise SystemExit(f"not a size: {text!r}")


if __name__ == "__main__":
    sys.exit(main())
