"""The follower and the primary's retention, with real processes: the copy
drops what the primary drops; a copy the primary no longer retains is refused
(exit 10, untouched) and only --resync moves it aside and copies afresh (also
after a primary restarted with a new history)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .test_connections import stats, wait_for
from .test_replication import SMALL, copies_equal, digests, write_many

pytestmark = pytest.mark.integration

RETAIN = (*SMALL, "--retain-bytes", "16k")


def all_digests(directory: Path) -> dict[str, str]:
    """Every file's sha256 (partitions, indexes, meta), to show nothing changed."""
    import hashlib

    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest()
            for n in sorted(os.listdir(directory)) if n.endswith((".log", ".idx")) or n == "meta"}


def log_names(directory: Path) -> list[str]:
    """The partition files, by name only: retention may delete one while we look."""
    return sorted(n for n in os.listdir(directory) if n.endswith(".log"))


def test_the_copy_applies_the_primarys_retention(logd_server, follower):
    srv = logd_server(*RETAIN)
    write_many(srv, 300)
    f = follower(srv.addr, "--fsync", "never")
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    first = log_names(srv.data_dir)[0]
    write_many(srv, 1500, 300, 5)  # many rolls: retention deletes on the primary ...
    wait_for(lambda: log_names(srv.data_dir)[0] != first, timeout=30, what="retention on the primary")
    # ... and the copy ends with exactly the primary's files: the old ones deleted there too.
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="retention on the copy")
    assert first not in log_names(f.data_dir)
    applied = wait_for(lambda: f.events("retention_applied"), timeout=10, what="retention_applied logged")
    assert min(applied[0]["deleted"]) == int(first.split("-")[0])
    assert f.proc.poll() is None and f.stop() == 0


def test_retention_overtaking_a_stopped_follower_then_resync(logd_server, follower, tmp_path):
    srv = logd_server(*RETAIN)
    write_many(srv, 200)
    f = follower(srv.addr, "--fsync", "never")
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    assert f.stop() == 0
    own = all_digests(f.data_dir)
    active = log_names(f.data_dir)[-1]
    write_many(srv, 2000, 200, 10)
    wait_for(lambda: active not in log_names(srv.data_dir), timeout=30, what="the copy's partition deleted")
    # Without --resync: the explicit refusal, exit 10, every file untouched.
    again = follower(srv.addr, "--fsync", "never", data_dir=f.data_dir)
    assert again.wait_exit(30) == 10
    refused = again.events("replication_refused")[-1]
    assert refused["code"] == "NOTRETAINED" and "no longer retained" in refused["reason"]
    assert all_digests(f.data_dir) == own
    # With --resync: the old copy is moved aside whole, and a fresh copy made.
    fresh = follower(srv.addr, "--fsync", "never", "--resync", data_dir=f.data_dir)
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="fresh copy")
    (moved,) = wait_for(lambda: fresh.events("copy_moved_aside"), timeout=10, what="copy_moved_aside")
    aside = Path(moved["moved_to"])
    assert aside.parent == f.data_dir.parent and aside.name.startswith(f.data_dir.name + ".resync-")
    assert all_digests(aside) == own
    assert stats(srv)["replication_full_copies"] == 2
    assert fresh.proc.poll() is None and fresh.stop() == 0


def test_resync_after_a_primary_with_a_new_history(logd_server, follower, tmp_path):
    srv = logd_server(*SMALL)
    write_many(srv, 300)
    f = follower(srv.addr, "--fsync", "never", "--resync")
    wait_for(lambda: copies_equal(srv.data_dir, f.data_dir), timeout=30, what="catch-up")
    port = srv.port
    assert f.proc.poll() is None
    assert srv.stop() == 0
    own = digests(f.data_dir)  # the partitions (its index of the active one is saved at close)
    history = (f.data_dir / "meta").read_bytes()
    # Back on an empty directory: another history. With --resync the old copy goes aside.
    new = logd_server(*SMALL, "--port", str(port), data_dir=tmp_path / "empty")
    write_many(new, 40)
    wait_for(lambda: f.events("copy_moved_aside"), timeout=30, what="the copy moved aside")
    (moved,) = f.events("copy_moved_aside")
    assert moved["code"] == "DIVERGED" and "history differs" in moved["reason"]
    aside = Path(moved["moved_to"])
    assert digests(aside) == own and (aside / "meta").read_bytes() == history
    wait_for(lambda: copies_equal(new.data_dir, f.data_dir), timeout=30, what="a copy of the new history")
    assert f.proc.poll() is None and f.stop() == 0
