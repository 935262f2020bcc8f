"""logd: a networked, sequenced log server.

The client API is exported lazily (PEP 562 ``__getattr__``), so that
``import logd`` stays light: no socket, msgpack or gevent import until a
name is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "connect", "Client", "Checkpoint", "Record"]

if TYPE_CHECKING:
    from .checkpoint import Checkpoint
    from .client import Client, connect
    from .record import Record

_LAZY = {
    "connect": ".client",
    "Client": ".client",
    "Checkpoint": ".checkpoint",
    "Record": ".record",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'logd' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
