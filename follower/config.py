"""The follower's settings: one table, as ``logd serve``'s (``logd.config``),
feeding flags, TOML keys and ``--help``."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

# The row maker and value parsers are the table's machinery, shared on purpose.
from logd.config import (FsyncMode, FsyncPolicy, Setting, _choice, _duration, _fsync, _setting, _size,
                         _Table, _text, format_size, parse_bool, parse_host_port, settings_of)

__all__ = ["FollowerConfig", "SETTINGS", "parse_primaries"]


def parse_primaries(value: Any) -> tuple[str, ...]:
    """``--primary``: one address, a comma list, several flags (a list), or a TOML list."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"must be HOST:PORT addresses, not {item!r}")
        out.extend(a.strip() for a in item.split(",") if a.strip())
    if not out:
        raise ValueError(f"must name at least one HOST:PORT, not {value!r}")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class FollowerConfig(_Table):
    """Every setting of ``logd-follower``, one row each."""

    PROGRAM = "logd-follower"

    primary: tuple[str, ...] = _setting(
        (), parse_primaries, "the primary to copy: HOST:PORT (or a unix socket path); several (repeat the "
        "flag, or a comma list) are tried in order until one streams", shown="required")
    data_dir: str = _setting("", _text, "the copy's data directory (its own; never the primary's)",
                             shown="required")
    fsync: FsyncPolicy = _setting(FsyncPolicy(FsyncMode.ALWAYS), _fsync,
                                  "always | interval:<ms> | never: when written bytes are fsynced "
                                  "(and reported to the primary as synced)")
    index_interval: int = _setting(4096, _size(1), "bytes between sparse index entries", show=format_size)
    name: str = _setting("", _text, "how the primary's STATS names this follower", factory=socket.gethostname,
                         shown="the host name")
    link_timeout: float = _setting(10.0, _duration, "reconnect when the primary sends nothing this long "
                                   "(it sends a heartbeat every second)")
    connect_timeout: float = _setting(5.0, _duration, "bound on each connection attempt")
    max_backoff: float = _setting(5.0, _duration, "longest wait between reconnection attempts")
    metrics: tuple[str, int] | None = _setting(
        None, parse_host_port, "serve Prometheus metrics at http://HOST:PORT/metrics (docs/metrics.rst)",
        shown="off")
    advertise: str = _setting("", _text, "the HOST:PORT of the read replica (logd serve --refuse) serving this "
                              "copy: when the primary refuses and names it as the new primary, the follower "
                              "stops (exit 0, \"handed over\") so that server can ACCEPT", shown="none")
    resync: bool = _setting(False, parse_bool,
                            "when the primary refuses the copy (NOTRETAINED, DIVERGED), move it aside to "
                            "DIR.resync-<UTC time> (never deleted) and copy afresh, instead of exiting")
    progress_interval: float = _setting(5.0, _duration, "off a terminal, seconds between catchup_progress "
                                        "log lines during the catch-up")
    log_level: str = _setting("info", _choice("debug", "info", "warning", "error"), "log level")
    log_format: str = _setting("auto", _choice("auto", "json", "console"),
                               "auto: JSON lines off a terminal, human-readable on one")


SETTINGS: tuple[Setting, ...] = settings_of(FollowerConfig)
