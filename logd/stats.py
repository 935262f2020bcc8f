"""Counters for STATS. Counter names live here once, never as literals elsewhere."""

from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

__all__ = ["Stats"]

CONNECTIONS_TOTAL = "connections_total"
CONNECTIONS_REJECTED = "connections_rejected"
PROTOCOL_ERRORS = "protocol_errors"
TIMEOUTS = "timeouts"
SLOW_READERS_DROPPED = "slow_readers_dropped"
MESSAGES_WRITTEN = "messages_written"
BYTES_WRITTEN = "bytes_written"
FSYNCS = "fsyncs"
FSYNC_ERRORS = "fsync_errors"
WRITE_ERRORS = "write_errors"
ACCEPT_FD_ERRORS = "accept_fd_errors"


class Stats:
    def __init__(self) -> None:
        self.started = time.time()
        self.counters: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.command_errors: Counter[str] = Counter()
        self.connections = 0
        self.tail_readers = 0
        self.last_fsync_time = 0.0
        self.last_fsync_seconds = 0.0

    def incr(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def wrote(self, bodies: Sequence[bytes]) -> None:
        """One MSG's messages were written."""
        counters = self.counters
        counters[MESSAGES_WRITTEN] += len(bodies)
        counters[BYTES_WRITTEN] += len(bodies[0]) if len(bodies) == 1 else sum(map(len, bodies))

    def command(self, name: str, failed: bool = False) -> None:
        self.commands[name] += 1
        if failed:
            self.command_errors[name] += 1

    def snapshot(self) -> dict[str, object]:
        out: dict[str, object] = {
            "uptime_seconds": round(time.time() - self.started, 3),
            "connections": self.connections,
            "tail_readers": self.tail_readers,
            "last_fsync_time": round(self.last_fsync_time, 3),
            "last_fsync_seconds": round(self.last_fsync_seconds, 6),
        }
        for name in (
            CONNECTIONS_TOTAL,
            CONNECTIONS_REJECTED,
            PROTOCOL_ERRORS,
            TIMEOUTS,
            SLOW_READERS_DROPPED,
            MESSAGES_WRITTEN,
            BYTES_WRITTEN,
            FSYNCS,
            FSYNC_ERRORS,
            WRITE_ERRORS,
            ACCEPT_FD_ERRORS,
        ):
            out[name] = self.counters[name]
        for name, n in sorted(self.commands.items()):
            out[f"cmd_{name}"] = n
        for name, n in sorted(self.command_errors.items()):
            out[f"cmd_{name}_errors"] = n
        return out
