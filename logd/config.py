"""Server configuration: embedded defaults < TOML file (``--config``) < flags.

TOML keys are the long flag names with ``_`` or ``-``, e.g.::

    host = "0.0.0.0"
    port = 1774
    data_dir = "/var/lib/logd"
    fsync = "interval:200"
    partition_size = "64MiB"
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["FsyncPolicy", "ServerConfig", "parse_size", "parse_duration", "load"]


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    mode: str  # "always" | "interval" | "never"
    interval_ms: int = 0

    @classmethod
    def parse(cls, text: str) -> "FsyncPolicy":
        text = text.strip().lower()
        if text in ("always", "never"):
            return cls(text)
        m = re.fullmatch(r"interval:(\d+)", text)
        if m and int(m.group(1)) > 0:
            return cls("interval", int(m.group(1)))
        raise ValueError(f"fsync policy must be always, never or interval:<ms>, not {text!r}")

    def __str__(self) -> str:
        return f"interval:{self.interval_ms}" if self.mode == "interval" else self.mode


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_size(value: str | int) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {value!r} (use e.g. 4096, 64KiB, 64MiB)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h``, ``7d`` or ``2w``."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 3600, 90m, 12h, 7d)")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def _default_data_dir() -> str:
    # systemd's StateDirectory= sets $STATE_DIRECTORY (colon-separated if several).
    state = os.environ.get("STATE_DIRECTORY")
    return state.split(":")[0] if state else "./logd-data"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 1774
    unix: str | None = None
    data_dir: str = field(default_factory=_default_data_dir)
    fsync: FsyncPolicy = FsyncPolicy("always")
    partition_size: int = 64 * 1024 * 1024
    index_interval: int = 4096
    retain_bytes: int = 0  # 0: keep everything
    retain_age: float = 0.0  # seconds; 0: keep everything
    verify_on_start: str = "full"  # "full" | "tail"
    allow_corrupt: bool = False
    max_clients: int = 10_000
    max_line: int = 1024
    max_message: int = 1024 * 1024
    max_args: int = 10_000
    max_request: int = 64 * 1024 * 1024
    max_pipeline: int = 1024
    idle_timeout: float = 0.0
    partial_timeout: float = 30.0
    send_timeout: float = 30.0
    shutdown_timeout: float = 10.0
    log_level: str = "info"
    log_format: str = "auto"

    def with_overrides(self, values: dict[str, Any]) -> "ServerConfig":
        known = {f.name for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown setting {key!r}")
            if value is None:
                continue
            if name == "fsync" and not isinstance(value, FsyncPolicy):
                value = FsyncPolicy.parse(str(value))
            elif name in ("partition_size", "max_message", "max_request", "index_interval",
                          "retain_bytes"):
                value = parse_size(value)
            elif name == "retain_age":
                value = parse_duration(value)
            elif name == "verify_on_start" and value not in ("full", "tail"):
                raise ValueError(f"verify_on_start must be full or tail, not {value!r}")
            elif name in ("idle_timeout", "partial_timeout", "send_timeout", "shutdown_timeout"):
                value = float(value)
            clean[name] = value
        return dataclasses.replace(self, **clean)


def load(path: str | None, flags: dict[str, Any]) -> ServerConfig:
    """Defaults, then the TOML file at ``path``, then the flags that were given."""
    config = ServerConfig()
    if path:
        with open(path, "rb") as f:
            config = config.with_overrides(tomllib.load(f))
    return config.with_overrides(flags)
