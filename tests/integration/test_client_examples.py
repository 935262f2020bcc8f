"""The Python examples in README.rst and docs/client.rst, run against a real server.

The code is taken from the files themselves, so the examples stay complete
and true (issue 7, item 19: the consumer called an undefined ``handle()``).
Only the address is replaced, by the test server's. Each runs as its own
``python`` process; its output is read with deadlines.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

import logd

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.1:1774"  # what the examples connect to


def indented_block(lines: list[str], start: int) -> str:
    """The indented block that follows ``lines[start]``, dedented."""
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith("   "):
            break
        block.append(line)
    code = textwrap.dedent("\n".join(block)).strip() + "\n"
    assert code.strip(), f"no code block after line {start + 1}"
    return code


def readme_example() -> str:
    lines = (REPO / "README.rst").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("From Python") and line.endswith("::"))
    return indented_block(lines, at)


def docs_consumer_example() -> str:
    lines = (REPO / "docs" / "client.rst").read_text().splitlines()
    heading = lines.index("A checkpointed consumer")
    at = next(i for i in range(heading, len(lines)) if lines[i].startswith(".. code-block:: python"))
    return indented_block(lines, at)


# Prepended to every example: Ctrl-C raises KeyboardInterrupt even when the
# test runs with SIGINT ignored (as a background job does).
CTRL_C = "import signal as _signal; _signal.signal(_signal.SIGINT, _signal.default_int_handler)\n"

# Prepended to an example to report each connection attempt on stderr, so a
# test can see that the example is trying before it starts the server.
COUNT_DIALS = textwrap.dedent(
    """
    import sys as _sys
    import logd.client as _client

    _dial = _client.Connection.dial

    def _counted(self):
        print("dial", file=_sys.stderr, flush=True)
        return _dial(self)

    _client.Connection.dial = _counted
    """
)


class Example:
    """An example running as a process; its stdout and stderr lines land in queues."""

    def __init__(self, code: str, address: str, cwd: Path, preamble: str = "") -> None:
        assert code.count(ADDRESS) >= 1, "the example no longer connects to " + ADDRESS
        script = cwd / "example.py"
        script.write_text(CTRL_C + preamble + code.replace(ADDRESS, address))
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._pump, args=(stream, q), daemon=True).start()

    def _pump(self, stream: IO[bytes], q: queue.Queue[str]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if q is self.err:
                self.stderr.append(line)
            q.put(line)

    def lines(self, n: int, q: queue.Queue[str] | None = None, timeout: float = 30.0) -> list[str]:
        q = self.out if q is None else q
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and q.empty()):
                raise AssertionError(f"got {got} of {n} lines; stderr: {self.stderr[-10:]}")
            try:
                got.append(q.get(timeout=min(left, 0.5)))
            except queue.Empty:
                continue
        return got

    def interrupt(self) -> None:
        """Ctrl-C: the with blocks exit, so the cursor is flushed."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the example did not stop on SIGINT")
        assert any("KeyboardInterrupt" in line for line in self.stderr), self.stderr[-10:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def examples() -> Any:
    running: list[Example] = []

    def start(code: str, address: str, cwd: Path, preamble: str = "") -> Example:
        ex = Example(code, address, cwd, preamble)
        running.append(ex)
        return ex

    yield start
    for ex in running:
        ex.kill()


def test_the_examples_define_what_they_call() -> None:
    for code in (readme_example(), docs_consumer_example()):
        compile(code, "example", "exec")
        assert "def handle(" in code and "handle(rec" in code


def test_readme_example_runs_and_resumes(logd_server: Any, examples: Any, tmp_path: Path) -> None:
    srv = logd_server()
    code = readme_example()
    ex = examples(code, srv.addr, tmp_path)
    # The write-and-read part, then the consumer from id 1.
    assert ex.lines(4) == ["1 b'event one'", "2 b'event two'", "1 event one", "2 event two"]
    with logd.connect(srv.addr) as c:
        c.append(b"event three")
    assert ex.lines(1) == ["3 event three"]
    ex.interrupt()
    # The cursor names the last record saved: 3, or 2 if Ctrl-C came between
    # handle(3) and cp.save(3), and then 3 is handled again (at least once).
    saved = int((tmp_path / "consumer.cursor").read_text())
    assert saved in (2, 3)
    # Run again: two more records are written; the consumer resumes after the cursor.
    again = examples(code, srv.addr, tmp_path)
    assert again.lines(2) == ["4 b'event one'", "5 b'event two'"]
    expected = {1: "event one", 2: "event two", 3: "event three", 4: "event one", 5: "event two"}
    assert again.lines(5 - saved) == [f"{i} {expected[i]}" for i in range(saved + 1, 6)]
    again.interrupt()
    assert int((tmp_path / "consumer.cursor").read_text()) in (4, 5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_docs_consumer_started_before_the_server(logd_server: Any, examples: Any, tmp_path: Path) -> None:
    # issue 7, item 11: the documented consumer waits for a server that is not up yet.
    port = free_port()  # picked in advance; released for the server to bind
    ex = examples(docs_consumer_example(), f"127.0.0.1:{port}", tmp_path, COUNT_DIALS)
    assert ex.lines(2, ex.err) == ["dial", "dial"]  # refused, and trying again
    assert ex.proc.poll() is None and ex.out.empty()
    srv = logd_server("--port", str(port))
    assert srv.port == port
    with logd.connect(srv.addr) as c:
        c.append(b"alpha", b"beta")
        assert ex.lines(2) == ["alpha", "beta"]
        c.append(b"gamma")
        assert ex.lines(1) == ["gamma"]
    ex.interrupt()
    assert int((tmp_path / "app.cursor").read_text()) in (2, 3)  # 2: Ctrl-C before save(3)
