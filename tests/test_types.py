"""The packages (logd, follower) type-check: ``python -m mypy`` with the ``[mypy]`` section of setup.cfg.

Strict everywhere except the modules setup.cfg lists as not strict yet. Any
error fails the test, except those in ``PENDING`` (empty now; kept for a
merge that lands known errors). The list may only shrink: an entry that no
longer occurs fails the test too, so it is removed as soon as it is fixed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (file, error code, start of the message): no line numbers, they move.
PENDING: set[tuple[str, str, str]] = set()

_ERROR = re.compile(r"^(?P<file>[^:]+):\d+: error: (?P<message>.*?)  \[(?P<code>[a-z-]+)\]$")


def _known(file: str, code: str, message: str) -> tuple[str, str, str] | None:
    for entry in PENDING:
        if entry[0] == file and entry[1] == code and message.startswith(entry[2]):
            return entry
    return None


def test_package_type_checks(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "setup.cfg", "--cache-dir", str(tmp_path),
         "--no-color-output", "--no-error-summary", "--show-error-codes", "logd"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    lines = proc.stdout.splitlines()
    errors = [m for line in lines if (m := _ERROR.match(line))]
    new = [m.group(0) for m in errors if _known(m["file"], m["code"], m["message"]) is None]
    seen = {_known(m["file"], m["code"], m["message"]) for m in errors}
    gone = PENDING - seen
    assert not new, "mypy errors:\n" + "\n".join(new)
    assert not gone, f"fixed, take them off PENDING in {__file__}: {sorted(gone)}"
    assert proc.returncode == (1 if errors else 0), proc.stdout + proc.stderr
    unparsed = [line for line in lines if "error:" in line and not _ERROR.match(line)]
    assert not unparsed, "\n".join(unparsed)
