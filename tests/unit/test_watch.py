"""The read replica's watcher (logd/watch.py) and the follower's status file (logd/log/status.py).

A real FileLog writes the directory in this process; a LogReader and a
Watcher read it, as a replica does. Waits are gevent waits with deadlines.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import gevent
import pytest

from logd.errors import Refused
from logd.events.commit import Commits
from logd.log import status as status_file
from logd.log.file import FileLog
from logd.log.reader import LogReader
from logd.protocol import encode_error
from logd.record import encode
from logd.watch import IN_CREATE, IN_DELETE, IN_MODIFY, Inotify, Watcher

# The same writer and no-fsync fixtures as the read-only log's own tests.
from .test_read_only_log import SMALL, no_fsync, writer  # noqa: F401


def commits_of(reader: LogReader) -> Commits:
    return Commits(reader.head(), reader.position(reader.head() + 1))


def wait_for(commits: Commits, id: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while commits.committed < id:
        left = deadline - time.monotonic()
        assert left > 0, f"committed is {commits.committed}, wanted {id} within {timeout}s"
        commits.wait(commits.committed, timeout=left)


# -- inotify ----------------------------------------------------------------------------


def test_inotify_reports_appends_new_files_and_deletes_by_name(tmp_path: Path) -> None:
    ino = Inotify(str(tmp_path))
    try:
        assert ino.read() == []
        (tmp_path / "a.log").write_bytes(b"x")
        with open(tmp_path / "a.log", "ab") as f:
            f.write(b"more")
        (tmp_path / "a.log").unlink()
        seen: list[tuple[int, str]] = []
        deadline = time.monotonic() + 2
        want = {IN_CREATE, IN_MODIFY, IN_DELETE}
        while not want <= {m for m, _ in seen} and time.monotonic() < deadline:
            seen += ino.wait(0.5)
        assert want <= {m for m, n in seen if n == "a.log"}
        assert ino.wait(0.01) == []  # drained: nothing more
    finally:
        ino.close()


def test_inotify_on_a_missing_directory_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="inotify_add_watch"):
        Inotify(str(tmp_path / "nope"))


# -- the watcher --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_the_watcher_publishes_what_the_writer_appends_across_rolls(writer: FileLog, mode: str) -> None:
    reader = LogReader(writer.directory, index_interval=64)
    commits = commits_of(reader)
    watcher = Watcher(reader, mode, interval=0.01)
    assert watcher.mode == mode
    watcher.start(commits)
    try:
        for n in range(1, 41):  # 40 records of ~20 bytes: several partitions
            writer.append([b"m%03d" % n])
            wait_for(commits, n)
            assert commits.position == writer.position(n + 1)
        assert len(reader.partitions()) > 2
        assert [r.body for r in reader.read(1, 41)] == [b"m%03d" % n for n in range(1, 41)]
        assert watcher.refreshes >= 1 and watcher.publishes >= 1
        if mode == "inotify":
            assert watcher.events > 0
    finally:
        watcher.stop()
        reader.close()


def test_the_watcher_follows_retention(writer: FileLog) -> None:
    for n in range(40):
        writer.append([b"r%03d" % n])
    reader = LogReader(writer.directory, index_interval=64)
    watcher = Watcher(reader, "inotify")
    commits = commits_of(reader)
    watcher.start(commits)
    try:
        assert writer.retain(max_bytes=400)
        deadline = time.monotonic() + 2
        while reader.first_id() != writer.first_id() and time.monotonic() < deadline:
            gevent.sleep(0.005)
        assert reader.first_id() == writer.first_id() > 1
    finally:
        watcher.stop()
        reader.close()


def test_half_a_msg_is_not_published_until_it_is_whole(writer: FileLog) -> None:
    writer.append([b"one"])
    reader = LogReader(writer.directory, index_interval=64)
    commits = commits_of(reader)
    watcher = Watcher(reader, "inotify")
    watcher.start(commits)
    try:
        path = writer.partitions()[-1].path
        data = encode(2, b"two", more=2) + encode(3, b"three", more=1) + encode(4, b"four", more=0)
        cuts = sorted(random.Random(9).sample(range(1, len(data)), 6))
        with open(path, "ab") as f:
            for a, b in zip([0, *cuts], cuts):
                f.write(data[a:b])
                f.flush()
                watcher.check()
                assert commits.committed == 1  # never a part of the MSG
            f.write(data[cuts[-1]:])
        wait_for(commits, 4)
        assert [r.body for r in reader.read(1, 5)] == [b"one", b"two", b"three", b"four"]
    finally:
        watcher.stop()
        reader.close()


def test_a_refresh_error_is_counted_and_what_was_visible_stays(writer: FileLog, tmp_path: Path) -> None:
    writer.append([b"a"])
    reader = LogReader(writer.directory, index_interval=64)
    watcher = Watcher(reader, "poll")
    commits = commits_of(reader)
    watcher.commits = commits
    stray = Path(writer.directory) / "0000000009-00000000000000000500.log"
    stray.write_bytes(b"")  # a partition that does not follow
    writer.append([b"b"])
    try:
        # What was verified before the bad partition is served: head, position
        # and partitions agree (refresh's state is never half updated).
        assert watcher.check() == 2 and commits.committed == 2
        assert commits.position == writer.position(3)
        assert watcher.refresh_errors == 1 and "does not follow" in watcher.last_error
        assert watcher.stats()["refresh_errors"] == 1
        assert [r.body for r in reader.read(1, 3)] == [b"a", b"b"]
        stray.unlink()
        writer.append([b"c"])
        assert watcher.check() == 3 and commits.committed == 3
        assert watcher.last_error == "" and watcher.refreshes == 1
    finally:
        reader.close()


def test_a_directory_moved_away_calls_on_gone(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    reader = LogReader(str(d))
    gone: list[str] = []
    watcher = Watcher(reader, "inotify", on_gone=gone.append)
    watcher.start(commits_of(reader))
    try:
        d.rename(tmp_path / "aside")
        deadline = time.monotonic() + 2
        while not gone and time.monotonic() < deadline:
            gevent.sleep(0.005)
        assert gone and "moved or deleted" in gone[0]
    finally:
        watcher.stop()
        reader.close()


def test_an_empty_directory_is_served_until_a_writer_comes(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    reader = LogReader(str(d), index_interval=64)
    commits = commits_of(reader)
    assert (commits.committed, commits.position) == (0, (1, 0))
    watcher = Watcher(reader, "inotify")
    watcher.start(commits)
    try:
        flog = FileLog(str(d), **SMALL)  # type: ignore[arg-type]
        try:
            assert reader.meta is None
            flog.append([b"first"])
            wait_for(commits, 1)
            assert reader.meta is not None and reader.meta.history == flog.meta.history  # adopted
        finally:
            flog.close()
    finally:
        watcher.stop()
        reader.close()


# -- the status file and what the replica says from it ------------------------------------


def test_status_round_trips_and_is_read_leniently(tmp_path: Path) -> None:
    s = status_file.FollowerStatus(primary="10.0.0.5:1774", link="streaming", written=(3, 4096, 51),
                                   fsynced=(3, 4000, 50), primary_head=60, updated=1764628200.5, pid=42)
    status_file.save(str(tmp_path), s)
    assert status_file.load(str(tmp_path)) == s
    assert not (tmp_path / "follower.status.tmp").exists()
    doc = json.loads((tmp_path / "follower.status").read_bytes())
    doc.update(newer_key=1, link="warp", written=[1, "x", 2])
    got = status_file.decode(json.dumps(doc).encode())
    assert (got.link, got.written, got.primary) == ("unknown", None, "10.0.0.5:1774")
    assert status_file.load(str(tmp_path / "nope")) is None


@pytest.mark.parametrize("data", [b"", b"{", b"[1]", b'{"format": 2}', b"\xff"])
def test_a_bad_status_file_is_a_status_error(data: bytes) -> None:
    with pytest.raises(status_file.StatusError):
        status_file.decode(data)


def test_refused_names_the_primary_from_the_status_file(writer: FileLog) -> None:
    reader = LogReader(writer.directory, index_interval=64)
    watcher = Watcher(reader, "poll")
    try:
        watcher.check()
        assert watcher.refused().primary is None
        assert b"primary is not known" in encode_error(watcher.refused())
        assert watcher.stats()["link"] == "unknown"
        status_file.save(writer.directory, status_file.FollowerStatus(
            primary="10.0.0.5:1774", link="streaming", primary_head=9, updated=time.time()))
        watcher.check()
        err = watcher.refused()
        assert isinstance(err, Refused) and err.primary == "10.0.0.5:1774"
        line = encode_error(err)
        assert line.startswith(b"ERR_CLIENT REFUSED ") and line.endswith(b" (primary=10.0.0.5:1774)\r\n")
        st = watcher.stats()
        assert (st["role"], st["primary"], st["link"], st["primary_head"], st["lag_ids"]) == (
            "replica", "10.0.0.5:1774", "streaming", 9, 9)
        assert str(st["writer"]).startswith(f"pid {os.getpid()} ")  # the FileLog here holds the lock
        status_file.save(writer.directory, status_file.FollowerStatus(
            primary="10.0.0.5:1774", link="streaming", updated=time.time() - 60))
        watcher.check()
        assert watcher.stats()["link"] == "stale"
        (Path(writer.directory) / "follower.status").write_bytes(b"junk")
        watcher.check()
        assert watcher.status_error and watcher.primary == "10.0.0.5:1774"  # the last good one stays
    finally:
        reader.close()


def test_handlers_refuse_msg_on_a_replica_and_still_read(writer: FileLog) -> None:
    from logd import stats as st
    from logd.config import FsyncPolicy
    from logd.events import Handlers, Peer, Stream
    from logd.protocol import Msg, Read

    writer.append([b"x"])
    reader = LogReader(writer.directory, index_interval=64)
    try:
        handlers = Handlers(reader, FsyncPolicy.parse("never"), st.Stats())
        watcher = Watcher(reader, "poll")
        handlers.refusing = watcher.refused
        peer = Peer("127.0.0.1:1", local=True)
        with pytest.raises(Refused, match="read replica"):
            handlers.handle(Msg((b"y",)), peer)
        handlers.stopping = True  # refused still: a write is never taken here, stopping or not
        with pytest.raises(Refused):
            handlers.handle(Msg((b"y",)), peer)
        assert handlers.handle(Read(1, 1), peer) == Stream(1, 1)
        assert writer.head() == 1 and reader.head() == 1
    finally:
        reader.close()


def test_another_history_in_the_directory_calls_on_gone(writer: FileLog) -> None:
    from logd.log import meta

    writer.append([b"old"])
    reader = LogReader(writer.directory, index_interval=64)
    gone: list[str] = []
    watcher = Watcher(reader, "poll", on_gone=gone.append)
    try:
        assert reader.meta is not None and watcher.check() == 1 and not gone
        served = reader.meta.history
        meta.save(writer.directory, meta.new())  # as a resync starting a new copy would
        writer.append([b"new"])
        assert watcher.check() == 1  # nothing more is taken in from the other log
        assert gone and "another history" in gone[0] and served in gone[0]
        assert watcher.check() == 1 and len(gone) == 1
    finally:
        reader.close()
