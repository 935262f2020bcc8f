"""Offline tools and server configuration met by hand: one-line messages, documented
exit codes (2 for usage and configuration), never a traceback (issue 7 items 16, 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def run_logd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logd", *args], capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


# -- item 16: check on something that is not a data directory -------------------------


def test_check_refuses_a_directory_that_is_not_a_data_directory(tmp_path):
    other = tmp_path / "notlogd"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    proc = run_logd("check", str(other))
    assert proc.returncode == 2
    assert proc.stdout.decode() == (f"{other}: not a logd data directory (no partitions, no lock file); "
                                    "--allow-empty accepts a directory with no log yet\n")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]  # nothing created in it


def test_check_allow_empty_accepts_an_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_logd("check", str(empty)).returncode == 2
    proc = run_logd("check", "--allow-empty", str(empty))
    assert proc.returncode == 0
    assert proc.stdout.decode() == f"{empty}: no partitions (an empty log; --allow-empty)\n"
    assert list(empty.iterdir()) == []


def test_check_of_a_data_directory_needs_no_flag(tmp_path):
    from logd.log.file import FileLog

    data = tmp_path / "data"
    flog = FileLog(str(data), fsync=False)
    flog.append([b"one", b"two"])
    flog.close()
    proc = run_logd("check", str(data))
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.decode().endswith(f"{data}: 1 partition(s), 2 records: sound\n")


# -- item 17: dump ----------------------------------------------------------------------


@pytest.fixture
def partition(tmp_path) -> Path:
    from logd.log.file import FileLog

    flog = FileLog(str(tmp_path / "d"), fsync=False)
    for i in range(3000):  # ~700 KB of output: more than a pipe holds
        flog.append([b"line %d " % i + b"x" * 200])
    flog.close()
    return sorted((tmp_path / "d").glob("*.log"))[0]


def test_dump_into_a_closed_pipe_ends_quietly(partition):
    proc = subprocess.run(f"{sys.executable} -m logd dump {partition} | head -1",
                          shell=True, capture_output=True, timeout=30, executable="/bin/bash",
                          env=None)
    assert proc.stdout.decode().startswith("offset=0 id=1 len=207 more=0 crc=ok")
    assert proc.stdout.count(b"\n") == 1
    assert proc.stderr == b""
    status = subprocess.run(["/bin/bash", "-c", "set -o pipefail; "
                             f"{sys.executable} -m logd dump {partition} | head -1 >/dev/null; "
                             "echo ${PIPESTATUS[0]}"], capture_output=True, timeout=30)
    assert status.stdout == b"1\n" and status.stderr == b""


def test_dump_a_directory_or_a_missing_file(partition):
    proc = run_logd("dump", str(partition.parent))
    assert proc.returncode == 2
    assert one_line(proc) == (f"logd dump: {partition.parent}: is a directory; give a partition file "
                              "(NNNNNNNNNN-<first id>.log), or run `logd check` on the directory")
    missing = partition.parent / "missing.log"
    proc = run_logd("dump", str(missing))
    assert proc.returncode == 2
    assert one_line(proc) == f"logd dump: {missing}: No such file or directory"


# -- item 17: serve's settings ---------------------------------------------------------


@pytest.mark.parametrize("flags, message", [
    (["--port", "80000"], "--port: must be 0..65535, not 80000"),
    (["--port", "x"], "--port: must be an integer 0..65535, not 'x'"),
    (["--max-clients", "0"], "--max-clients: must be at least 1, not 0"),
    (["--partition-size", "lots"], "--partition-size: not a size: 'lots' (use e.g. 4096, 64KiB, 64MiB)"),
    (["--verify-on-start", "some"], "--verify-on-start: must be one of auto, full, tail, not 'some'"),
])
def test_serve_bad_flag_values(tmp_path, flags, message):
    proc = run_logd("serve", "--data-dir", str(tmp_path / "d"), *flags)
    assert proc.returncode == 2
    assert one_line(proc) == f"logd serve: {message}"
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("toml, message", [
    ("data_dir = 5\n", "data_dir: must be a non-empty string, not 5"),
    ('port = "x"\n', "port: must be an integer 0..65535, not 'x'"),
    ("port = 70000\n", "port: must be 0..65535, not 70000"),
    ("max_clients = -1\n", "max_clients: must be at least 1, not -1"),
    ("fsync = true\n", "fsync: must be always, never or interval:<ms>, not True"),
    ("allow_corrupt = \"yes\"\n", "allow_corrupt: must be true or false, not 'yes'"),
    ("colour = 1\n", "colour: unknown setting (logd serve --help lists them)"),
    ("port = \n", "not valid TOML: Invalid value (at line 1, column 8)"),
])
def test_serve_bad_toml(tmp_path, toml, message):
    cfg = tmp_path / "logd.toml"
    cfg.write_text(toml)
    proc = run_logd("serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 2
    assert one_line(proc) == f"logd serve: {cfg}: {message}"


def test_serve_missing_config_file(tmp_path):
    cfg = tmp_path / "nope.toml"
    proc = run_logd("serve", "--config", str(cfg))
    assert proc.returncode == 2
    assert one_line(proc) == f"logd serve: {cfg}: cannot read it: No such file or directory"


def test_serve_help_shows_defaults():
    proc = run_logd("serve", "--help")
    assert proc.returncode == 0
    out = " ".join(proc.stdout.decode().split())  # argparse wraps lines
    for text in ("TCP port, 0 for any free one [default: 1774]", "[default: 64MiB]",
                 "[default: $STATE_DIRECTORY or", "[default: always]",
                 "--verify-on-start VERIFY_ON_START auto:"):
        assert text in out, text
