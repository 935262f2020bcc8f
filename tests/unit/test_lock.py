"""The writer lock (logd/log/lock.py): flock plus a file naming its holder."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest

from logd.errors import LogdError, StorageError
from logd.log import lock as lockmod
from logd.log.file import FileLog
from logd.log.lock import LOCK_FILE, UNKNOWN, DirectoryLocked, Holder, WriterLock, holder, this_program

SINCE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def foreign(tmp_path: Path) -> Iterator[int]:
    """An fd holding the flock the way a process that does not name itself would
    (a logd from before issue 8): another open file description, so it
    conflicts with ours as another process's would."""
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    yield fd
    os.close(fd)


def test_acquire_writes_who_holds_it(tmp_path: Path) -> None:
    lock = WriterLock.acquire(str(tmp_path), "logd serve")
    doc = json.loads((tmp_path / LOCK_FILE).read_bytes())
    assert doc == {"pid": os.getpid(), "program": "logd serve", "since": lock.holder.since}
    assert SINCE.fullmatch(doc["since"])
    assert abs(datetime.fromisoformat(doc["since"]).timestamp() - datetime.now().timestamp()) < 60
    assert holder(str(tmp_path)) == Holder(os.getpid(), "logd serve", doc["since"])
    lock.release()


def test_a_second_writer_is_told_who_holds_it(tmp_path: Path) -> None:
    first = WriterLock.acquire(str(tmp_path), "logd serve")
    with pytest.raises(DirectoryLocked) as info:
        WriterLock.acquire(str(tmp_path), "logd check --fix")
    assert str(info.value) == (f"data directory {tmp_path} is in use by pid {os.getpid()} "
                               f"(logd serve, since {first.holder.since}); stop it first")
    assert info.value.holder == first.holder
    assert isinstance(info.value, StorageError) and isinstance(info.value, LogdError)
    # The refused writer changed nothing: the file still names the holder.
    assert json.loads((tmp_path / LOCK_FILE).read_bytes())["program"] == "logd serve"
    first.release()


def test_release_empties_the_file_and_frees_the_directory(tmp_path: Path) -> None:
    with WriterLock.acquire(str(tmp_path), "logd serve") as lock:
        assert lock.held
    assert not lock.held
    assert (tmp_path / LOCK_FILE).read_bytes() == b""  # kept: `logd check` takes it as a data dir
    assert holder(str(tmp_path)) is None
    lock.release()  # twice is fine
    again = WriterLock.acquire(str(tmp_path), "logd check")
    assert holder(str(tmp_path)) == again.holder
    again.release()


def test_holder_of_a_directory_nobody_holds(tmp_path: Path) -> None:
    assert holder(str(tmp_path)) is None  # no lock file at all
    assert not (tmp_path / LOCK_FILE).exists()  # and holder() did not make one
    # A crashed holder's name stays in the file, but the kernel dropped its lock.
    (tmp_path / LOCK_FILE).write_text('{"pid": 4194999, "program": "logd serve", "since": "x"}\n')
    assert holder(str(tmp_path)) is None


def test_a_crashed_holders_name_is_replaced(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text('{"pid": 4194999, "program": "logd serve", '
                                      '"since": "2026-01-01T00:00:00Z", "padding": "' + "x" * 200 + '"}\n')
    lock = WriterLock.acquire(str(tmp_path), "logd serve")
    assert json.loads((tmp_path / LOCK_FILE).read_bytes())["pid"] == os.getpid()  # whole, no old tail
    lock.release()


def test_a_holder_that_does_not_name_itself(tmp_path: Path, foreign: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lockmod, "SETTLE", 0.05)
    assert holder(str(tmp_path)) is UNKNOWN
    with pytest.raises(DirectoryLocked) as info:
        WriterLock.acquire(str(tmp_path), "logd serve")
    assert info.value.holder is UNKNOWN
    assert str(info.value) == (f"data directory {tmp_path} is in use by another process "
                               "(it does not say which); stop it first")


def test_a_holder_that_names_itself_while_we_wait_is_named(
        tmp_path: Path, foreign: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The instant between a holder's flock and its write: the second writer
    waits (up to SETTLE) for the name instead of reporting nobody."""
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        os.pwrite(foreign, b'{"pid": %d, "program": "logd-follower", "since": "2026-12-01T22:30:00Z"}'
                  % os.getpid(), 0)

    monkeypatch.setattr(lockmod.time, "sleep", sleep)
    with pytest.raises(DirectoryLocked) as info:
        WriterLock.acquire(str(tmp_path), "logd serve")
    assert len(waits) == 1
    assert info.value.holder == Holder(os.getpid(), "logd-follower", "2026-12-01T22:30:00Z")


def test_a_probe_by_holder_does_not_make_a_writer_fail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """holder() takes a shared lock for an instant; a writer that meets it
    (nobody named in the file) tries again instead of failing."""
    real = fcntl.flock
    calls: list[int] = []

    def flock(fd: int, op: int) -> Any:
        calls.append(op)
        if len(calls) == 1:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(lockmod.time, "sleep", lambda s: None)
    lock = WriterLock.acquire(str(tmp_path), "logd serve")
    assert len(calls) == 2 and lock.held
    lock.release()


def test_a_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open lock file .*/missing/lock"):
        WriterLock.acquire(str(tmp_path / "missing"), "logd serve")


@pytest.mark.parametrize("argv, expected", [
    (["/venv/lib/python3.11/site-packages/logd/__main__.py", "serve", "--port", "0"], "logd serve"),
    (["/usr/bin/logd", "check", "--fix", "/var/lib/logd"], "logd check"),
    (["/usr/bin/logd", "--config", "x"], "logd"),
    (["/usr/bin/logd-follower"], "logd-follower"),
    (["/venv/bin/pytest", "tests/unit"], "pytest"),
    ([], "python"),
])
def test_this_program(monkeypatch: pytest.MonkeyPatch, argv: list[str], expected: str) -> None:
    monkeypatch.setattr(sys, "argv", argv)
    assert this_program() == expected


def test_file_log_takes_the_lock_and_names_itself(tmp_path: Path) -> None:
    directory = str(tmp_path / "d")
    flog = FileLog(directory, fsync=False)
    try:
        found = holder(directory)
        assert found is not None and found.pid == os.getpid() and found.program == this_program()
        with pytest.raises(DirectoryLocked, match=rf"is in use by pid {os.getpid()} \("):
            FileLog(directory, fsync=False)
    finally:
        flog.close()
    assert holder(directory) is None
    FileLog(directory, fsync=False).close()  # free again after close


def test_file_log_releases_the_lock_when_the_open_fails(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    FileLog(str(directory), fsync=False).close()
    (directory / "0000000003-00000000000000000001.log").write_bytes(b"")  # not after partition 1
    with pytest.raises(StorageError, match="does not follow"):
        FileLog(str(directory), fsync=False)
    assert holder(str(directory)) is None
