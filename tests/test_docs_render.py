"""Every reStructuredText file in the repo renders without a warning.

A malformed table or a stray merge marker renders as garbage on a package
index or a docs site, silently: docutils only halts when told to.
"""

from __future__ import annotations

from pathlib import Path

import docutils.core as docutils_core
import pytest

REPO = Path(__file__).resolve().parent.parent
FILES = sorted(p for p in [REPO / "README.rst", *REPO.glob("docs/*.rst"), *REPO.glob("bench/*.rst")])


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(REPO)) for p in FILES])
def test_renders_without_warnings(path: Path) -> None:
    messages: list[str] = []

    class Collect:
        def write(self, text: str) -> None:
            messages.append(text)

    docutils_core.publish_doctree(path.read_text(), source_path=str(path), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": Collect()})
    assert not "".join(messages), "".join(messages)
