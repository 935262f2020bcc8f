"""README.rst's ``nc`` session, typed into a real server, so it stays true (issue 7, item 12).

The session is the first literal block under "Talking to it" that starts with
``$ nc``. A line is typed when it starts with a command name or continues a
framed command (a ``CommandParser`` says so); every other line is what the
server must answer, in order, byte for byte (lines end in CRLF).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from logd import protocol

from .wire import Wire

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.rst"
COMMANDS = {"MSG", "READ", "HEAD", "PING", "STATS", "CLOSE", "SHUTDOWN", "REPLICATE", "REFUSE", "ACCEPT"}


def session_lines() -> tuple[str, list[str]]:
    text = README.read_text()
    section = text[text.index("Talking to it\n---") :]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    $ nc"))
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return lines[start][6:], block


def exchanges(block: list[str]) -> list[tuple[bytes, bytes]]:
    """(bytes typed, bytes expected back) for each turn of the session."""
    parser = protocol.CommandParser()
    turns: list[tuple[bytes, bytes]] = []
    typed, expected = b"", b""
    for line in block:
        raw = line.encode() + b"\r\n"  # nc -C: CRLF line ends
        is_typed = parser.in_progress or (line.split() and line.split()[0].upper() in COMMANDS)
        if is_typed:
            if expected:
                turns.append((typed, expected))
                typed, expected = b"", b""
            typed += raw
            parser.receive_data(raw)
            while parser.next_command() is not protocol.NEED_DATA:
                pass
        else:
            expected += raw
    turns.append((typed, expected))
    return turns


def test_session_is_well_formed():
    command, block = session_lines()
    assert command == "nc -C 127.0.0.1 1774"
    turns = exchanges(block)
    assert len(turns) >= 5 and all(typed and expected for typed, expected in turns)
    assert turns[-1] == (b"CLOSE\r\n", b"OK\r\n")


def test_readme_session_against_a_real_server(logd_server):
    srv = logd_server()
    w = Wire(srv.host, srv.port, timeout=10)
    _, block = session_lines()
    turns = exchanges(block)
    for typed, expected in turns[:-1]:
        w.send(typed)
        assert w.read_exact(len(expected)) == expected, typed
    typed, expected = turns[-1]
    w.send(typed)
    assert w.read_to_close() == expected  # CLOSE: OK, then the server closes


@pytest.mark.skipif(shutil.which("nc") is None, reason="nc not installed (apt-get install netcat-openbsd)")
def test_readme_session_through_nc(logd_server):
    """The same session through nc itself: -N half-closes after stdin, as typed at a terminal."""
    srv = logd_server()
    _, block = session_lines()
    turns = exchanges(block)
    typed = b"".join(t for t, _ in turns).replace(b"\r\n", b"\n")
    proc = subprocess.run(["nc", "-C", "-N", srv.host, str(srv.port)], input=typed,
                          capture_output=True, timeout=30)
    assert proc.stdout == b"".join(e for _, e in turns)
