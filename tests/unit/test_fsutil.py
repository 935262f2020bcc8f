"""fsutil: atomic_write and fsync_dir, the one copy of "write a small file whole"."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from logd import fsutil
from logd.fsutil import atomic_write, fsync_dir


def _kinds(monkeypatch: pytest.MonkeyPatch, target: Path) -> list[tuple[str, bytes | None]]:
    """Record each fsync as (file|dir, what ``target`` holds at that moment)."""
    seen: list[tuple[str, bytes | None]] = []
    real = os.fsync

    def spy(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        seen.append((kind, target.read_bytes() if target.exists() else None))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_writes_whole_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "meta"
    atomic_write(path, b"one\n")
    atomic_write(str(path), b"two\n")
    assert path.read_bytes() == b"two\n"
    assert sorted(os.listdir(tmp_path)) == ["meta"]


def test_fsyncs_the_tmp_file_then_renames_then_fsyncs_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "recovery-point"
    path.write_bytes(b"old")
    seen = _kinds(monkeypatch, path)
    atomic_write(path, b"new")
    # The file is synced while the old contents are still in place, the
    # directory after the rename: the order that makes a crash safe.
    assert seen == [("file", b"old"), ("dir", b"new")]


def test_not_durable_skips_both_fsyncs_but_still_renames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.idx"
    seen = _kinds(monkeypatch, path)
    atomic_write(path, b"\0" * 16, durable=False)
    assert seen == []
    assert path.read_bytes() == b"\0" * 16 and sorted(os.listdir(tmp_path)) == ["x.idx"]


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:3])))
    data = bytes(range(256)) * 4
    atomic_write(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.parametrize("fail", ["write", "fsync"])
def test_a_failed_write_keeps_the_old_file_and_removes_the_tmp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str) -> None:
    path = tmp_path / "cursor"
    path.write_bytes(b"41\n")

    def boom(*args: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, fail, boom)
    with pytest.raises(OSError) as info:
        atomic_write(path, b"42\n")
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == b"41\n"
    assert sorted(os.listdir(tmp_path)) == ["cursor"]


def test_a_stale_tmp_from_a_crash_is_overwritten(tmp_path: Path) -> None:
    (tmp_path / "meta.tmp").write_bytes(b"half a file from before a crash" * 10)
    atomic_write(tmp_path / "meta", b"{}\n")
    assert (tmp_path / "meta").read_bytes() == b"{}\n"
    assert not (tmp_path / "meta.tmp").exists()


def test_a_missing_directory_raises_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no" / "meta", b"x")
    assert os.listdir(tmp_path) == []


def test_fsync_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _kinds(monkeypatch, tmp_path / "none")
    fsync_dir(tmp_path)
    assert seen == [("dir", None)]
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


def test_relative_path_syncs_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seen = _kinds(monkeypatch, tmp_path / "rel")
    fsutil.atomic_write("rel", b"x")
    assert [k for k, _ in seen] == ["file", "dir"]
    assert (tmp_path / "rel").read_bytes() == b"x"


def test_read_small_reads_whole_refuses_huge_and_says_none_for_missing(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 10)
    assert fsutil.read_small(tmp_path / "f", 10) == b"x" * 10
    assert fsutil.read_small(tmp_path / "missing", 10) is None
    with pytest.raises(OSError, match="larger than 9 bytes") as exc:
        fsutil.read_small(tmp_path / "f", 9)
    assert exc.value.errno == errno.EFBIG
    with pytest.raises(IsADirectoryError):
        fsutil.read_small(tmp_path, 9)
