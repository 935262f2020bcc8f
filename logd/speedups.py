"""Which implementation of the per-message work runs: native or pure Python.

``logd._speedups`` (logd/_speedups.c) is an optional C extension, built by
``pip install`` when a compiler and Python's headers are there, as hiredis is
for redis-py. The pure-Python functions are the reference and the fallback:
the C ones must return exactly what they return (tests/unit/test_speedups.py
runs one corpus against both). ``LOGD_PURE=1`` forces pure Python.

This module imports nothing of logd, so that record.py and the parsers can
pick their functions at import time.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["native", "IMPLEMENTATION", "load_native"]


def load_native() -> ModuleType | None:
    """The C module, or None when it is not built (or LOGD_PURE=1)."""
    if os.environ.get("LOGD_PURE", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


native = load_native()
IMPLEMENTATION = "native" if native is not None else "pure"
