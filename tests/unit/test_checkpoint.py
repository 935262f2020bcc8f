"""Checkpoint: journalctl --cursor-file semantics, atomic and batched saves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from logd.checkpoint import Checkpoint, CheckpointError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def on_disk(path: Path) -> int | None:
    return int(path.read_text()) if path.exists() else None


def test_no_file_starts_at_default(tmp_path: Path) -> None:
    cp = Checkpoint(tmp_path / "cursor")
    assert cp.last_id is None
    assert cp.next_id() == 1
    assert cp.next_id(default=0) == 0
    assert cp.next_id(default=42) == 42


def test_next_id_is_saved_plus_one(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    with Checkpoint(path, every=1) as cp:
        cp.save(17)
    assert path.read_bytes() == b"17\n"
    assert Checkpoint(path).next_id(default=1) == 18


def test_every_batches_writes(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    clock = FakeClock()
    cp = Checkpoint(path, every=3, interval=100, clock=clock)
    cp.save(1)
    cp.save(2)
    assert on_disk(path) is None
    assert cp.next_id() == 3  # pending ids count in memory
    cp.save(3)
    assert on_disk(path) == 3
    cp.save(4)
    assert on_disk(path) == 3
    cp.flush()
    assert on_disk(path) == 4


def test_interval_batches_writes(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    clock = FakeClock()
    cp = Checkpoint(path, every=1000, interval=1.0, clock=clock)
    cp.save(1)
    assert on_disk(path) is None
    clock.now = 0.5
    cp.save(2)
    assert on_disk(path) is None
    clock.now = 1.0
    cp.save(3)
    assert on_disk(path) == 3
    clock.now = 1.5
    cp.save(4)
    assert on_disk(path) == 3


def test_context_manager_flushes_on_error(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    with pytest.raises(RuntimeError):
        with Checkpoint(path, every=100) as cp:
            cp.save(5)
            raise RuntimeError("consumer failed after processing 5")
    assert on_disk(path) == 5


def test_flush_without_pending_is_noop(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    Checkpoint(path).flush()
    assert not path.exists()


def test_save_is_atomic_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    cp = Checkpoint(path, every=1)
    for i in range(1, 50):
        cp.save(i)
        assert path.read_bytes() == b"%d\n" % i
    assert sorted(os.listdir(tmp_path)) == ["cursor"]


def test_stale_tmp_file_is_ignored(tmp_path: Path) -> None:
    # A crash between writing the tmp file and the rename leaves it behind.
    path = tmp_path / "cursor"
    path.write_bytes(b"10\n")
    (tmp_path / "cursor.tmp").write_bytes(b"1")
    cp = Checkpoint(path, every=1)
    assert cp.next_id() == 11
    cp.save(11)
    assert on_disk(path) == 11
    assert sorted(os.listdir(tmp_path)) == ["cursor"]


@pytest.mark.parametrize("content", [b"", b"abc\n", b"-3\n", b"12x"])
def test_garbage_file_raises(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cursor"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        Checkpoint(path)


def test_tolerates_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    path.write_bytes(b" 7 \r\n")
    assert Checkpoint(path).next_id() == 8


def test_every_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Checkpoint(tmp_path / "cursor", every=0)


def test_missing_directory_is_an_error_at_open(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        Checkpoint(tmp_path / "no" / "such" / "cursor")


def test_directory_is_an_error_at_open(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory"):
        Checkpoint(tmp_path)


def test_failed_save_is_a_checkpoint_error(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    cp = Checkpoint(d / "cursor", every=1)
    d.rmdir()
    with pytest.raises(CheckpointError, match="cannot save"):
        cp.save(3)


def test_restore_puts_the_file_back(tmp_path: Path) -> None:
    path = tmp_path / "cursor"
    cp = Checkpoint(path, every=1)
    cp.save(5)
    cp.restore(None)
    assert not path.exists() and cp.last_id is None
    cp.save(7)
    cp.save(8)
    cp.restore(2)
    assert on_disk(path) == 2 and cp.last_id == 2
    cp.restore(None)
    cp.restore(None)  # no file: nothing to do
    assert not path.exists()
