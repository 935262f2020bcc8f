"""README.rst's "Replication" commands, run as written (ports and directories
swapped for free ones): a primary, a follower, a read replica on its copy;
the write is read back from the replica and the stats table shows the
follower with the columns the README shows."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .test_connections import wait_for

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.rst"
PROGRAMS = {"logd": [sys.executable, "-m", "logd"], "logd-follower": [sys.executable, "-m", "follower"]}


def section() -> str:
    text = README.read_text()
    start = text.index("Replication\n-----------\n")
    return text[start : text.index("Read replicas\n-------------\n")]


def literal_blocks(text: str) -> list[list[str]]:
    """Each ``::`` block's lines, unindented."""
    blocks, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.endswith("::"):
            block = []
            for x in lines[i + 2 :]:
                if not x.startswith("    "):
                    break
                block.append(x[4:])
            blocks.append(block)
    return blocks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_the_replication_commands_work_as_written(tmp_path: Path) -> None:
    commands, table = literal_blocks(section())[:2]
    assert len(commands) == 6 and commands[0].startswith("logd serve --port 1774")
    ports = {"1774": str(free_port()), "1775": str(free_port())}
    dirs = {"/tmp/logd-primary": str(tmp_path / "primary"), "/tmp/logd-copy": str(tmp_path / "copy")}
    background: list[subprocess.Popen[bytes]] = []
    outputs = []
    try:
        for line in commands:
            for old, new in (*ports.items(), *dirs.items()):
                line = line.replace(old, new)
            words = shlex.split(line)
            is_background = words[-1] == "&"
            argv = PROGRAMS[words[0]] + words[1 : -1 if is_background else None]
            if is_background:
                background.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
                proc = background[-1]
                if words[1] == "serve":
                    port = int(words[words.index("--port") + 1])
                    wait_for(lambda: listening(port) or proc.poll() is not None, timeout=20,
                             what=f"{line} listening")
                    assert proc.poll() is None, f"{line} exited {proc.returncode}"
                else:  # as a person would, start the replica once the copy is there
                    meta = Path(words[words.index("--data-dir") + 1]) / "meta"
                    wait_for(meta.exists, timeout=20, what="the follower's copy")
                continue
            # What the follower copies shows a moment later: on the replica, in the table.
            # (read and stats are safe to repeat; the write runs once)
            want = {"read": b"world", "stats": b" 0 "}.get(words[3])
            if want is not None:
                def shown() -> bool:
                    out = subprocess.run(argv, capture_output=True, timeout=30)
                    return out.returncode == 0 and want in out.stdout

                wait_for(shown, timeout=20, what=line)
            out = subprocess.run(argv, capture_output=True, timeout=30)
            assert out.returncode == 0, (line, out.stderr)
            outputs.append(out.stdout.decode())
    finally:
        codes = []
        for proc in reversed(background):
            proc.terminate()
            codes.append(proc.wait(20))
    assert codes == [0, 0, 0]
    write, read, stats = outputs
    assert write.split() == ["1", "2"]
    assert '"body": "hello"' in read and '"body": "world"' in read
    lines = stats.splitlines()
    header = next(x for x in lines if x.strip().startswith("ADDRESS"))
    assert header.split() == table[0].split()
    row = lines[lines.index(header) + 1].split()
    assert row[2].endswith(":2") and row[4] == "0" and row[5] == "0"
