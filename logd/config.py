"""Server configuration: embedded defaults < TOML file (``--config``) < flags.

TOML keys are the long flag names with ``_`` or ``-``, e.g.::

    host = "0.0.0.0"
    port = 1774
    data_dir = "/var/lib/logd"
    fsync = "interval:200"
    partition_size = "64MiB"

One table, ``SETTINGS`` (name, parser, shown default, help), checks values
from both sources and feeds ``logd serve --help`` (gunicorn's ``Setting``).
A bad value is a ``ConfigError`` naming where it came from (the file and
key, or the flag); ``logd serve`` prints it on one line and exits 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, NamedTuple

__all__ = ["ConfigError", "FsyncPolicy", "ServerConfig", "SETTINGS", "parse_size", "parse_duration", "load"]


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


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from."""


# -- value parsers: a flag's str or a TOML value in, the typed value out -----------


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        span = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer {span}, not {value!r}")
        if value < lo or (hi is not None and value > hi):
            raise ValueError(f"must be {span}, not {value}")
        return value
    return parse


def _size(lo: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"must be a size such as 4096 or \"64MiB\", not {value!r}")
        size = parse_size(value)
        if size < lo:
            raise ValueError(f"must be at least {lo} bytes, not {value!r}")
        return size
    return parse


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be a duration such as 30 or \"90s\", not {value!r}")
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError(f"must not be negative, not {value!r}")
    return seconds


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, not {value!r}")
    return value


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {value!r}")
        return value.lower()
    return parse


def _fsync(value: Any) -> FsyncPolicy:
    if isinstance(value, FsyncPolicy):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be always, never or interval:<ms>, not {value!r}")
    return FsyncPolicy.parse(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


class Setting(NamedTuple):
    name: str  # the ServerConfig field; the flag is --name-with-dashes
    parse: Callable[[Any], Any]
    default: str  # as --help shows it
    help: str

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", _text, "127.0.0.1", "address to listen on"),
    Setting("port", _int(0, 65535), "1774", "TCP port, 0 for any free one"),
    Setting("unix", _text, "none", "also listen on this unix domain socket path"),
    Setting("data_dir", _text, "$STATE_DIRECTORY or ./logd-data", "data directory"),
    Setting("fsync", _fsync, "always", "always | interval:<ms> | never"),
    Setting("partition_size", _size(1), "64MiB", "roll partitions at this size"),
    Setting("index_interval", _size(1), "4096", "bytes between sparse index entries"),
    Setting("retain_bytes", _size(0), "0", "delete the oldest closed partitions past this total size, 0 = keep all"),
    Setting("retain_age", _duration, "0", "delete closed partitions older than this (e.g. 7d), 0 = keep all"),
    Setting("verify_on_start", _choice("auto", "full", "tail"), "auto",
            "auto: after a clean stop trust what the marker covers, after a crash verify what "
            "follows the recovery point; full: verify every record; tail: trust sane indexes"),
    Setting("allow_corrupt", _bool, "false", "start despite corrupt records mid-log; READ reports them"),
    Setting("max_clients", _int(1), "10000", "connections served at once"),
    Setting("max_line", _int(16), "1024", "longest command or length line"),
    Setting("max_message", _size(1), "1MiB", "largest message"),
    Setting("max_args", _int(1), "10000", "most messages in one MSG"),
    Setting("max_request", _size(1), "64MiB", "largest request, all arguments together"),
    Setting("max_pipeline", _int(1), "1024", "replies pending per connection before reading pauses"),
    Setting("idle_timeout", _duration, "0", "close connections idle this many seconds, 0 = never"),
    Setting("partial_timeout", _duration, "30", "close a connection whose command stays incomplete this long"),
    Setting("send_timeout", _duration, "30", "drop a reader that takes no bytes this long"),
    Setting("shutdown_timeout", _duration, "10", "bound on each graceful shutdown step"),
    Setting("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("log_format", _choice("auto", "json", "console"), "auto",
            "auto: JSON lines off a terminal, human-readable on one"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


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
    verify_on_start: str = "auto"  # "auto" | "full" | "tail"
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

    def with_overrides(self, values: dict[str, Any], source: str = "") -> "ServerConfig":
        """Apply ``values`` (TOML keys or flag names); None means "not given".

        Raises:
            ConfigError: an unknown key or a bad value, named as
                ``<source>: <key>: ...`` (or ``--<flag>: ...`` without a source).
        """
        known = {f.name for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            where = f"{source}: {key}" if source else f"--{name.replace('_', '-')}"
            if name not in known:
                raise ConfigError(f"{where}: unknown setting (logd serve --help lists them)")
            if value is None:
                continue
            setting = _BY_NAME.get(name)
            if setting is not None:
                try:
                    value = setting.parse(value)
                except ValueError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
            clean[name] = value
        return dataclasses.replace(self, **clean)


def load(path: str | None, flags: dict[str, Any]) -> ServerConfig:
    """Defaults, then the TOML file at ``path``, then the flags that were given.

    Raises:
        ConfigError: the file cannot be read or parsed, or a value is bad.
    """
    config = ServerConfig()
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
        config = config.with_overrides(doc, source=path)
    return config.with_overrides(flags)
