"""The logd client library, in two layers (after redis-py's ``Connection`` and ``Redis``):

- ``connection.Connection``: one socket plus a ``protocol.ReplyParser``; the
  only client code that does I/O (dial, retry with ``logd.backoff``, send,
  receive, whole replies and records). It knows no commands.
- ``client.Client``: the commands (``append``, ``head``, ``read``,
  ``follow``...) and ``Pipeline``, on a ``Connection``.

Everything documented in docs/client.rst is importable from here, as it
was from the single ``logd.client`` module before the split.
"""

from __future__ import annotations

from .client import (
    BATCH_BYTES,
    BATCH_COUNT,
    WINDOW,
    Client,
    ObjRecord,
    Pipeline,
    append_ids,
    batches,
    connect,
    decode_stats,
    pack,
    unpack,
)
from .connection import CONNECT_BACKOFF, DEFAULT_PORT, FATAL, RECV_SIZE, Connection, parse_address

__all__ = [
    "BATCH_BYTES",
    "BATCH_COUNT",
    "CONNECT_BACKOFF",
    "DEFAULT_PORT",
    "FATAL",
    "RECV_SIZE",
    "WINDOW",
    "Client",
    "Connection",
    "ObjRecord",
    "Pipeline",
    "append_ids",
    "batches",
    "connect",
    "decode_stats",
    "pack",
    "parse_address",
    "unpack",
]
