"""Recovery, corruption, fsync failure, retention and the offline tools, with exact outcomes."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logd.record import encode

from .wire import Wire, records, small_window, wire

pytestmark = pytest.mark.integration


def append(w: Wire, *bodies: bytes) -> int:
    w.cmd("MSG", *bodies)
    line = w.line()
    assert line.startswith(b"OK "), line
    return int(line[3:-2])


def read_all(w: Wire, start: int, limit: int) -> list[tuple[int, bytes]]:
    w.cmd("READ", start, limit)
    return records(w.read_until(b"+EOF\r\n")[4:])


def partitions(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.iterdir() if p.suffix == ".log")


def total_size(data_dir: Path) -> int:
    total = 0
    for p in partitions(data_dir):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # deleted by retention since the listing
            pass
    return total


def run_logd(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logd", *args], capture_output=True, timeout=timeout,
                          env=env)


@pytest.mark.parametrize("garbage_len", [1, 2, 17, 64, 500, 1024])
def test_garbage_after_last_record_is_cut(logd_server, garbage_len):
    srv = logd_server()
    w = wire(srv)
    bodies = [b"msg-%d" % i for i in range(1, 11)]
    for b in bodies:
        append(w, b)
    srv.kill()
    (part,) = partitions(srv.data_dir)
    intact = part.read_bytes()
    garbage = random.Random(garbage_len).randbytes(garbage_len)
    part.write_bytes(intact + garbage)
    srv.start()
    event = srv.wait_event("tail_truncated")
    assert event["bytes_dropped"] == garbage_len and event["offset"] == len(intact)
    assert part.read_bytes() == intact
    assert Path(f"{part}.trunc.0").read_bytes() == garbage
    w = wire(srv)
    assert read_all(w, 1, 10) == list(enumerate(bodies, 1))
    assert append(w, b"next") == 11


def test_torn_msg_is_cut_whole(logd_server):
    """A MSG whose last record never reached the file is removed entirely."""
    srv = logd_server()
    w = wire(srv)
    append(w, b"a", b"b")
    srv.kill()
    (part,) = partitions(srv.data_dir)
    intact = part.read_bytes()
    batch = encode(3, b"c", 2) + encode(4, b"d", 1) + encode(5, b"e", 0)
    for cut in (len(encode(3, b"c", 2)), len(batch) - len(encode(5, b"e", 0)), len(batch) - 1):
        part.write_bytes(intact + batch[:cut])
        srv.start()
        assert srv.wait_event("tail_truncated")["bytes_dropped"] == cut
        assert part.read_bytes() == intact
        w = wire(srv)
        w.cmd("HEAD")
        assert w.line() == b"OK 2\r\n"
        w.close()
        srv.kill()
        srv.logs.clear()


@pytest.mark.parametrize("damage", ["missing", "truncated", "lying", "out_of_order", "garbage"])
def test_index_damage_is_detected_and_rebuilt(logd_server, damage):
    srv = logd_server("--partition-size", "2KiB", "--index-interval", "100")
    w = wire(srv)
    bodies = [b"body %04d " % i + b"x" * (i % 50) for i in range(1, 301)]
    for i in range(0, 300, 3):
        append(w, *bodies[i : i + 3])
    assert srv.stop() == 0
    idx_files = sorted(p for p in srv.data_dir.iterdir() if p.suffix == ".idx")
    assert len(idx_files) > 5
    victim = idx_files[len(idx_files) // 2]
    data = victim.read_bytes()
    assert len(data) >= 64
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_bytes(data[:-5])
    elif damage == "lying":  # the last entry points 10 bytes past its record
        entry_id = int.from_bytes(data[-16:-8], "little")
        offset = int.from_bytes(data[-8:], "little")
        victim.write_bytes(data[:-16] + entry_id.to_bytes(8, "little") + (offset + 10).to_bytes(8, "little"))
    elif damage == "out_of_order":
        victim.write_bytes(data[16:32] + data[:16] + data[32:])
    else:
        victim.write_bytes(random.Random(1).randbytes(len(data)))
    srv.start()
    if damage != "missing":
        assert srv.wait_event("index_ignored")["partition"] == int(victim.name[:10])
    assert victim.read_bytes() != b"" and len(victim.read_bytes()) % 16 == 0
    w = wire(srv)
    for start in range(1, 301, 7):
        assert read_all(w, start, 1) == [(start, bodies[start - 1])]
    assert read_all(w, 1, 300) == list(enumerate(bodies, 1))


def _flip_byte_in_record(part: Path, record_index: int) -> tuple[int, int]:
    """Flip one body byte of the record_index-th record; return (offset, id)."""
    data = bytearray(part.read_bytes())
    pos = 0
    for _ in range(record_index):
        header_end = data.index(b"\r\n", pos)
        length = int(data[pos + 1 : header_end].split(b" ")[1])
        pos = header_end + 2 + length + 2
    header_end = data.index(b"\r\n", pos)
    rec_id = int(data[pos + 1 : header_end].split(b" ")[0])
    data[header_end + 3] ^= 0x01
    part.write_bytes(bytes(data))
    return pos, rec_id


def test_corrupt_record_mid_sealed_partition_refuses_start(logd_server, tmp_path):
    srv = logd_server("--partition-size", "1KiB")
    w = wire(srv)
    bodies = [b"record number %03d" % i for i in range(1, 101)]
    for b in bodies:
        append(w, b)
    assert srv.stop() == 0
    parts = partitions(srv.data_dir)
    assert len(parts) >= 3
    victim = parts[1]
    offset, bad_id = _flip_byte_in_record(victim, 5)
    # After a clean stop only sizes and last records are checked by default (a bit
    # flip inside a sealed partition is for `logd check`); full verification finds it.
    proc = run_logd("serve", "--port", "0", "--data-dir", str(srv.data_dir), "--log-format", "json",
                    "--verify-on-start", "full")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "startup_failed" in err and victim.name in err
    assert f"offset {offset}" in err and f"id {bad_id}" in err
    assert not list(srv.data_dir.glob("*.trunc.*"))  # nothing was cut

    # With --allow-corrupt it serves around the bad record, and says so on READ.
    srv.flags = ("--partition-size", "1KiB", "--allow-corrupt", "--verify-on-start", "full")
    srv.start()
    assert srv.wait_event("corrupt_record")["id"] == bad_id
    w = wire(srv)
    w.cmd("READ", 1, 100)
    reply = w.read_until(b"\r\nERR CORRUPT")
    got = records(reply[4 : -len(b"ERR CORRUPT")])
    assert got == list(enumerate(bodies[: bad_id - 1], 1))
    assert f" record {bad_id} in partition {int(victim.name[:10])} at offset {offset}".encode() in w.line()
    assert read_all(w, bad_id + 1, 100 - bad_id) == list(enumerate(bodies[bad_id:], bad_id + 1))
    assert w.stats()["corrupt_records"] == 1
    assert append(w, b"still writable") == 101


def test_corrupt_record_mid_active_partition_is_not_a_torn_tail(logd_server):
    srv = logd_server()
    w = wire(srv)
    for i in range(1, 21):
        append(w, b"m%d" % i)
    srv.kill()
    (part,) = partitions(srv.data_dir)
    before = part.read_bytes()
    _, bad_id = _flip_byte_in_record(part, 9)
    proc = run_logd("serve", "--port", "0", "--data-dir", str(srv.data_dir), "--log-format", "json")
    assert proc.returncode == 1
    assert f"id {bad_id}" in proc.stderr.decode() and "not a torn tail" in proc.stderr.decode()
    assert len(part.read_bytes()) == len(before)  # nothing truncated


def test_failed_fsync_stops_writes_until_restart(logd_server, monkeypatch):
    monkeypatch.setenv("LOGD_FAULTS", "fsync_fail_after=3")
    srv = logd_server()
    monkeypatch.delenv("LOGD_FAULTS")
    w = wire(srv)
    acked = [append(w, b"ok %d" % i) for i in range(1, 4)]
    assert acked == [1, 2, 3]
    w.cmd("MSG", b"doomed")
    assert w.line().startswith(b"ERR FSYNC fsync failed")
    w.cmd("MSG", b"also refused")
    assert w.line().startswith(b"ERR FSYNC")
    s = w.stats()
    assert "fsync failed" in s["failed"] and s["fsync_errors"] == 1
    w.send(b"PING\r\n")
    assert w.line() == b"PONG\r\n"
    assert read_all(w, 1, 3) == [(1, b"ok 1"), (2, b"ok 2"), (3, b"ok 3")]
    srv.kill()
    srv.start()  # without the fault: the unacknowledged record may or may not be there
    w = wire(srv)
    w.cmd("HEAD")
    head = int(w.line()[3:-2])
    assert head in (3, 4)
    assert append(w, b"after restart") == head + 1


def test_retention_deletes_oldest_closed_partitions(logd_server):
    srv = logd_server("--partition-size", "1KiB", "--retain-bytes", "3KiB")
    w = wire(srv)
    tail = wire(srv)
    tail.cmd("READ", 1, 0)
    assert tail.line() == b"OK\r\n"
    bodies = [b"retained? %04d " % i + b"r" * 40 for i in range(1, 201)]
    for i in range(0, 200, 4):
        append(w, *bodies[i : i + 4])
    srv.wait_event("partition_deleted")
    deadline = time.monotonic() + 10  # retention runs once a second: wait until it settles
    while time.monotonic() < deadline and total_size(srv.data_dir) > 3 * 1024:
        time.sleep(0.05)
    parts = partitions(srv.data_dir)
    assert sum(p.stat().st_size for p in parts) <= 3 * 1024
    first = int(parts[0].name[11:31])
    assert first > 1
    w.cmd("READ", 1, 1)
    assert w.line() == b"ERR_CLIENT NOTRETAINED start 1 is no longer retained; valid starts are %d..201 (first=%d head=200)\r\n" % (first, first)
    assert read_all(w, 0, 200 - first + 1) == [(i, bodies[i - 1]) for i in range(first, 201)]
    # The tail reader started at id 1 got every record, in order, deletions notwithstanding.
    got = records(tail.read_until(encode(200, bodies[199], 0)))
    assert got == list(enumerate(bodies, 1))


def test_tail_reader_inside_deleted_partition_finishes_it(logd_server):
    srv = logd_server("--partition-size", "2KiB", "--retain-bytes", "1", "--send-timeout", "20")
    w = wire(srv)
    bodies = [b"x%04d" % i + b"y" * 90 for i in range(1, 101)]
    for b in bodies[:10]:
        append(w, b)
    reader = wire(srv)
    reader.cmd("READ", 1, 0)
    assert reader.line() == b"OK\r\n"
    assert records(reader.read_until(encode(10, bodies[9], 0))) == list(enumerate(bodies[:10], 1))
    for b in bodies[10:]:
        append(w, b)  # rolls partitions; retention deletes all closed ones
    srv.wait_event("partition_deleted")
    got = records(reader.read_until(encode(100, bodies[99], 0)))
    assert got == list(enumerate(bodies[10:], 11))


def stopped_server_with_60_records(logd_server):
    srv = logd_server("--partition-size", "1KiB")
    w = wire(srv)
    for i in range(1, 61):
        append(w, b"check %d" % i)
    assert srv.stop() == 0
    return srv


def test_check_and_fix(logd_server):
    srv = stopped_server_with_60_records(logd_server)
    proc = run_logd("check", str(srv.data_dir))
    assert proc.returncode == 0, proc.stdout
    assert b"60 records: sound" in proc.stdout
    last = partitions(srv.data_dir)[-1]
    data = last.read_bytes()
    last.write_bytes(data + b"+61 9 0 0000")  # a torn record
    (srv.data_dir / last.name.replace(".log", ".idx")).unlink()
    proc = run_logd("check", str(srv.data_dir))
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert f"{last.name}: offset {len(data)}: incomplete record: torn tail of 12 bytes" in out
    assert "index missing" in out
    proc = run_logd("check", "--fix", str(srv.data_dir))
    assert proc.returncode == 0, proc.stdout
    assert last.read_bytes() == data
    assert Path(f"{last}.trunc.0").read_bytes() == b"+61 9 0 0000"
    assert run_logd("check", str(srv.data_dir)).returncode == 0
    dump = run_logd("dump", str(partitions(srv.data_dir)[0]))
    assert dump.returncode == 0
    assert dump.stdout.startswith(b"offset=0 id=1 len=7 more=0 crc=ok body=b'check 1'\n")


def test_check_reports_mid_log_corruption_and_fix_keeps_it(logd_server):
    srv = stopped_server_with_60_records(logd_server)
    victim = partitions(srv.data_dir)[0]
    offset, bad_id = _flip_byte_in_record(victim, 3)
    before = victim.read_bytes()
    for args in (["check"], ["check", "--fix"]):
        proc = run_logd(*args, str(srv.data_dir))
        assert proc.returncode == 1
        assert f"offset {offset}: id {bad_id}: checksum mismatch".encode() in proc.stdout
        assert victim.read_bytes() == before


def test_finite_read_ending_inside_a_deleted_partition_stops_at_its_limit(logd_server):
    """The reader stalls (it does not read) inside partition 1 while retention deletes it;
    the READ must still end after exactly `limit` records, sent from the fd it holds.
    30 MB of records: more than loopback's socket buffers hold, so the stream is blocked
    mid-partition when the deletion happens."""
    srv = logd_server("--partition-size", "32MiB", "--retain-bytes", "1", "--send-timeout", "60")
    w = wire(srv)
    body = lambda i: b"%06d" % i + bytes([i % 251]) * 100_000
    for i in range(1, 101):
        append(w, body(i))
    slow = socket.create_connection((srv.host, srv.port))
    slow.sendall(b"READ 2\r\n1 1\r\n3 250\r\n")  # ends at id 250, inside partition 1
    # The stream sends 1..100 (10 MB), blocks on the full socket, and only later
    # looks for 101..250, after their partition is gone.
    for i in range(101, 301):
        append(w, body(i))
    parts = partitions(srv.data_dir)
    assert len(parts) == 1  # all 300 records in partition 1
    for i in range(301, 341):  # rolls to partition 2; retention then deletes partition 1
        append(w, body(i))
    srv.wait_event("partition_deleted")
    assert not parts[0].exists()
    data = bytearray()
    deadline = time.monotonic() + 60
    slow.settimeout(10)
    while not data.endswith(b"+EOF\r\n") and time.monotonic() < deadline:
        chunk = slow.recv(1 << 20)
        assert chunk, "server closed the stream"
        data += chunk
    got = records(bytes(data[4:]))
    assert [i for i, _ in got] == list(range(1, 251))
    assert all(b == body(i) for i, b in got)
    assert data.startswith(b"OK\r\n") and data.endswith(encode(250, body(250), 0) + b"+EOF\r\n")
    slow.settimeout(0.3)
    with pytest.raises(socket.timeout):
        slow.recv(1)  # nothing after +EOF


def test_lagging_tail_reader_behind_retention_gets_every_id_or_notretained(logd_server):
    """Issue 7 item 3. The reader's first spans() walk covers 16 partitions; it blocks
    sending the first of them (the reader pauses, its receive buffer is tiny) while
    retention deletes the front partitions. It used to resume at a list index that
    now named a later partition (a silent gap) or past the end (IndexError, a
    silent close). It must get ids 1..k, k the last id of the partition it holds open,
    then exactly one NOTRETAINED line for k+1, or (if the next partition survived)
    every id."""
    srv = logd_server("--partition-size", "256KiB", "--retain-bytes", "8MiB", "--send-timeout", "60")
    w = wire(srv)
    body = lambda i: b"%08d " % i + b"z" * 991  # ~1 KiB records, 250 to a partition
    last = 0
    def write_mib(mib: int) -> None:
        nonlocal last
        for _ in range(mib * 16):
            ids = range(last + 1, last + 65)
            assert append(w, *(body(i) for i in ids)) == ids[-1]
            last = ids[-1]
    write_mib(4)
    assert len(partitions(srv.data_dir)) >= 16
    reader = small_window(srv, timeout=30)
    reader.sendall(b"READ 2\r\n1 1\r\n1 0\r\n")
    buf = b""
    while b"\r\n" not in buf:
        buf += reader.recv(4)
    assert buf.startswith(b"OK\r\n")
    write_mib(8)  # the reader does not read meanwhile; retention deletes ~4 MiB of the front
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and total_size(srv.data_dir) > 8 << 20:
        time.sleep(0.05)
    assert total_size(srv.data_dir) <= 8 << 20
    deleted = {e["partition"]: e for e in srv.events("partition_deleted")}
    assert 1 in deleted and 2 in deleted
    first_left = int(partitions(srv.data_dir)[0].name[11:31])
    # Resume reading: everything up to `last`, or up to an error line.
    end_marker = encode(last, body(last), 0)
    deadline = time.monotonic() + 60
    while end_marker not in buf and b"ERR" not in buf[-300:]:
        assert time.monotonic() < deadline, f"stream stalled; tail {buf[-200:]!r}"
        chunk = reader.recv(1 << 20)
        assert chunk, f"stream closed without an error line after {len(buf)} bytes: {buf[-200:]!r}"
        buf += chunk
    if b"ERR" in buf[-300:] and not buf.endswith(b"\r\n"):
        while not buf.endswith(b"\r\n"):
            assert time.monotonic() < deadline
            buf += reader.recv(1 << 16)
    err_at = buf.find(b"ERR_CLIENT")
    # Parse only the records: a long error line is not a record header.
    got = records(buf[4 : err_at if err_at >= 0 else len(buf)])
    ids = [i for i, _ in got]
    assert ids == list(range(1, len(ids) + 1)), "a gap in the ids"
    assert all(b == body(i) for i, b in got)
    k = len(ids)
    if k == last:
        return  # the partition after the one held open survived: every id, no error
    # Stopped at the end of the partition it held open; the next one is gone.
    held = [n for n, e in deleted.items() if e["last_id"] == k]
    assert held and (held[0] + 1) in deleted, (k, sorted(deleted))
    tail = buf[err_at:]
    assert tail == (b"ERR_CLIENT NOTRETAINED records from %d were deleted by retention "
                    b"(first=%d head=%d)\r\n" % (k + 1, first_left, last))
    assert buf.count(b"ERR_CLIENT") == 1
    reader.close()
