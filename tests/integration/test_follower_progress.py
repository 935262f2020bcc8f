"""The catch-up's progress: off a terminal, catchup_progress log lines with
bytes and ids copied, rates and the ETA to the primary's head; on one, a
redrawn line."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading

import pytest

from .test_connections import wait_for
from .test_replication import SMALL, copies_equal, write_many

pytestmark = pytest.mark.integration

FIELDS = {"bytes", "ids", "bytes_per_second", "ids_per_second", "id", "primary_head", "ids_left",
          "eta_seconds"}


def test_catch_up_logs_progress_lines(logd_server, follower):
    srv = logd_server(*SMALL)
    write_many(srv, 5000, batch=50)
    f = follower(srv.addr, "--fsync", "never", "--progress-interval", "0.02")
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=60, what="catch-up")
    wait_for(lambda: f.events("follower_caught_up"), timeout=10, what="caught up")
    lines = f.events("catchup_progress")
    assert lines, "no catchup_progress line"
    for e in lines:
        assert FIELDS <= e.keys()
        assert e["primary_head"] == 5000 and e["ids_left"] == 5000 - e["id"]
        assert 0 <= e["ids"] <= 5000 and e["bytes"] >= 0
    ids = [e["ids"] for e in lines]
    assert ids == sorted(ids)
    moving = [e for e in lines if e["ids"]]
    assert all(e["ids_per_second"] > 0 and e["eta_seconds"] is not None for e in moving)
    assert lines[-1]["done"] is True and [e["done"] for e in lines].count(True) == 1
    assert (lines[-1]["ids"], lines[-1]["ids_left"], lines[-1]["id"]) == (5000, 0, 5000)
    assert lines[-1]["bytes"] == sum(p.stat().st_size for p in srv.data_dir.iterdir()
                                     if p.name.endswith(".log"))
    count = len(lines)
    write_many(srv, 100, 5000)  # streaming now: no more progress lines
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="following")
    assert len(f.events("catchup_progress")) == count
    assert f.stop() == 0


def test_on_a_terminal_the_catch_up_is_one_redrawn_line(logd_server, tmp_path):
    """stderr a terminal (a pty the test owns): the progress is a line redrawn
    with \\r and cleared to its end, ended by a newline once caught up; no
    catchup_progress log lines."""
    srv = logd_server(*SMALL)
    write_many(srv, 5000, batch=50)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "follower", "--primary", srv.addr, "--data-dir",
                             str(tmp_path / "copy"), "--fsync", "never"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = bytearray()

    def pump() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the follower closed the terminal
                return
            if not chunk:
                return
            out.extend(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    final = re.compile(rb"\rcatching up: [^\r\n]*, 5000 ids copied \([^\r\n]*\), at id 5000 of 5000, "
                       rb"[^\r\n]*\x1b\[K\r?\n")  # the tty may turn \n into \r\n
    try:
        wait_for(lambda: final.search(bytes(out)), timeout=60, what="the final progress line on the tty")
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        reader.join(5)
        os.close(master)
    assert b'"catchup_progress"' not in out
