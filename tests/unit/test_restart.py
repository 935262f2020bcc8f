"""What an open verifies (issue 7 item 10): the clean marker and the recovery point.

Pure file I/O in tmp_path. ``scan`` calls are recorded (partition file, start
offset) to check exactly what was verified record by record. A crash is a
copy of the directory while the log is open.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from structlog.testing import capture_logs

from logd.errors import CorruptLogError
from logd.log import file as file_mod
from logd.log import recovery
from logd.log.file import FileLog
from logd.log.marks import read_recovery_point

SMALL = dict(partition_size=400, index_interval=64, fsync_func=lambda fd: None)


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """(partition number, start offset) of every scan an open runs."""
    calls: list[tuple[int, int]] = []
    real = recovery.scan

    def spy(fd, start, size, next_id, on_record=None, progress=None):  # type: ignore[no-untyped-def]
        name = os.readlink(f"/proc/self/fd/{fd}")
        calls.append((int(os.path.basename(name)[:10]), start))
        return real(fd, start, size, next_id, on_record, progress)

    monkeypatch.setattr(recovery, "scan", spy)
    yield calls


def fill(flog: FileLog, n: int, tag: bytes = b"r") -> None:
    for i in range(n):
        flog.append([tag + b" %04d " % i + b"x" * 30, tag + b" %04d bis" % i])


def sync(flog: FileLog, force_rp: bool = True) -> None:
    if force_rp:
        flog._rp_due = 0.0
    point = flog.begin_sync()
    point.run()
    flog.end_sync(point)


def bodies(flog: FileLog) -> list[bytes]:
    return [r.body for r in flog.read(1, flog.head() + 1)]


def test_clean_reopen_verifies_no_record(tmp_path: Path, scans: list) -> None:
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 60)
    want, parts = bodies(flog), len(flog.partitions())
    flog.close()
    marker = json.loads((tmp_path / "d" / "clean-shutdown").read_text())
    assert marker["format"] == 2 and marker["head"] == 120
    assert [row[0] for row in marker["partitions"]] == list(range(1, parts + 1))
    scans.clear()
    with capture_logs() as logs:
        again = FileLog(str(tmp_path / "d"), **SMALL)
    assert scans == []
    assert again.opened_how == {"clean": parts}
    done = [e for e in logs if e["event"] == "log_verified"]
    assert done[0]["verified_mib"] == 0 and done[0]["partitions_clean"] == parts
    assert bodies(again) == want
    assert not (tmp_path / "d" / "clean-shutdown").exists()
    assert read_recovery_point(str(tmp_path / "d")).id == 120  # type: ignore[union-attr]
    again.close()


def test_clean_marker_disagreeing_sends_that_partition_to_full_verification(tmp_path: Path, scans: list) -> None:
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 60)
    flog.close()
    last = sorted((tmp_path / "d").glob("*.log"))[-1]
    with open(last, "ab") as f:
        f.write(b"garbage")  # the marker says otherwise: that partition is scanned, the tail cut
    scans.clear()
    with capture_logs() as logs:
        again = FileLog(str(tmp_path / "d"), **SMALL)
    assert scans == [(int(last.name[:10]), 0)]
    assert [e["reason"] for e in logs if e["event"] == "clean_marker_mismatch"] == [
        f"size {last.stat().st_size + 7}, the marker says {last.stat().st_size}"]
    assert again.head() == 120 and again.bytes_dropped == 7
    again.close()


def test_after_a_crash_only_what_follows_the_recovery_point_is_verified(tmp_path: Path, scans: list) -> None:
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 40)
    sync(flog)
    rp = read_recovery_point(str(tmp_path / "d"))
    assert rp is not None and not isinstance(rp, str) and rp.id == 80
    assert (tmp_path / "d" / "recovery-point").read_text() == (
        f"logd-recovery-point 1 partition={rp.partition} offset={rp.offset} id=80\n")
    fill(flog, 20, b"s")  # written, never synced: after the point
    sync(flog, force_rp=False)  # an fsync inside the 1 s bound moves nothing
    assert read_recovery_point(str(tmp_path / "d")) == rp
    want = bodies(flog)
    last_part = flog.partitions()[-1].number
    shutil.copytree(flog.directory, tmp_path / "crash", ignore=shutil.ignore_patterns("lock"))
    flog.close()
    scans.clear()
    again = FileLog(str(tmp_path / "crash"), **SMALL)
    # Before the point: each partition only past its last index entry; at the point:
    # from its offset; after it: every record.
    at_point = [s for s in scans if s[0] == rp.partition]
    assert at_point == [(rp.partition, rp.offset)]
    assert [n for n, off in scans if n > rp.partition] == list(range(rp.partition + 1, last_part + 1))
    assert all(off == 0 for n, off in scans if n > rp.partition)
    assert all(off > 0 for n, off in scans if n < rp.partition)
    assert again.opened_how["full"] == last_part - rp.partition
    assert bodies(again) == want
    again.close()


def test_a_recovery_point_past_the_data_is_ignored(tmp_path: Path, scans: list) -> None:
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 3)
    shutil.copytree(flog.directory, tmp_path / "crash", ignore=shutil.ignore_patterns("lock"))
    flog.close()
    part = sorted((tmp_path / "crash").glob("*.log"))[-1]
    (tmp_path / "crash" / "recovery-point").write_text(
        f"logd-recovery-point 1 partition={int(part.name[:10])} offset={part.stat().st_size + 50} id=99\n")
    scans.clear()
    with capture_logs() as logs:
        again = FileLog(str(tmp_path / "crash"), **SMALL)
    assert [e["event"] for e in logs if e["event"] == "recovery_point_ignored"] == ["recovery_point_ignored"]
    assert scans == [(int(part.name[:10]), 0)]
    assert again.head() == 6
    again.close()


@pytest.mark.parametrize("leftover", ["old_marker", "nothing", "garbage_point"])
def test_an_older_directory_is_verified_in_full(tmp_path: Path, scans: list, leftover: str) -> None:
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 30)
    parts = len(flog.partitions())
    flog.close()
    d = tmp_path / "d"
    os.unlink(d / "recovery-point")
    if leftover == "old_marker":  # what the first format wrote
        (d / "clean-shutdown").write_text("head=60 time=1700000000.000\n")
    else:
        os.unlink(d / "clean-shutdown")
        if leftover == "garbage_point":
            (d / "recovery-point").write_bytes(b"\0" * 40)
    scans.clear()
    again = FileLog(str(d), **SMALL)
    assert sorted(scans) == [(n, 0) for n in range(1, parts + 1)]
    assert again.opened_how == {"full": parts}
    assert again.head() == 60
    again.close()


def test_full_verification_finds_what_the_clean_path_trusts(tmp_path: Path) -> None:
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 60)
    flog.close()
    victim = sorted((tmp_path / "d").glob("*.log"))[1]
    data = bytearray(victim.read_bytes())
    data[data.index(b"xxxx")] ^= 0x01  # a body byte of the first record: its CRC fails
    victim.write_bytes(bytes(data))
    shutil.copytree(tmp_path / "d", tmp_path / "copy")
    with pytest.raises(CorruptLogError):
        FileLog(str(tmp_path / "copy"), verify="full", **SMALL)
    FileLog(str(tmp_path / "d"), **SMALL).close()  # sizes and last records agree: trusted


def test_progress_lines_while_verifying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 60)
    flog.close()
    monkeypatch.setattr(file_mod, "PROGRESS_EVERY", 0.0)
    with capture_logs() as logs:
        FileLog(str(tmp_path / "d"), verify="full", **SMALL).close()
    lines = [e for e in logs if e["event"] == "verifying"]
    assert len(lines) >= 2
    assert {"partition", "partitions", "partitions_done", "verified_mib", "total_mib", "mib_per_s"} <= set(lines[-1])
    done = [e for e in logs if e["event"] == "log_verified"][0]
    assert done["partitions_full"] == done["partitions"] and done["trusted_mib"] == 0


def test_a_recovery_point_or_marker_that_cannot_be_written_fails_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    flog = FileLog(str(tmp_path / "d"), **SMALL)
    before = (tmp_path / "d" / "recovery-point").read_text()

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_mod, "write_recovery_point", full)
    monkeypatch.setattr(file_mod, "write_clean", full)
    fill(flog, 5)
    with capture_logs() as logs:
        sync(flog)
        assert flog.synced_head() == 10 and flog.failed is None
        flog.append([b"still writable"])
        flog.close()
    assert [e["event"] for e in logs if e["event"].endswith("_not_saved")] == [
        "recovery_point_not_saved", "clean_marker_not_saved"]
    assert (tmp_path / "d" / "recovery-point").read_text() == before  # the old point stands
    assert not (tmp_path / "d" / "clean-shutdown").exists()
    monkeypatch.undo()
    again = FileLog(str(tmp_path / "d"), **SMALL)  # the crash path, from the old point
    assert again.head() == 11
    again.close()


def test_a_crash_in_the_partition_of_the_recovery_point_scans_from_the_point(tmp_path: Path, scans: list) -> None:
    """The active partition was created after the open (a roll): its index entries are
    saved with the recovery point, so the scan starts at the point, not at 0."""
    flog = FileLog(str(tmp_path / "d"), **SMALL)
    fill(flog, 40)
    sync(flog)
    rp = read_recovery_point(str(tmp_path / "d"))
    assert rp is not None and not isinstance(rp, str)
    assert rp.partition == flog.partitions()[-1].number and rp.offset > 0
    flog.append([b"after the point"])
    want = bodies(flog)
    shutil.copytree(flog.directory, tmp_path / "crash", ignore=shutil.ignore_patterns("lock"))
    flog.close()
    scans.clear()
    again = FileLog(str(tmp_path / "crash"), **SMALL)
    assert [s for s in scans if s[0] == rp.partition] == [(rp.partition, rp.offset)]
    assert "full" not in again.opened_how
    assert bodies(again) == want
    again.close()
