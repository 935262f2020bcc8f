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
from enum import StrEnum
from typing import Any, Callable, NamedTuple, TypeVar

from . import admin

__all__ = ["ConfigError", "FsyncMode", "FsyncPolicy", "Role", "ServerConfig", "SETTINGS", "Setting",
           "VerifyMode", "parse_addresses", "parse_host_port", "parse_size", "parse_duration", "load"]


class FsyncMode(StrEnum):
    ALWAYS = "always"  # ack after fdatasync (group commit)
    INTERVAL = "interval"  # fdatasync every interval_ms; ack at once
    NEVER = "never"  # the OS writes back when it likes


class Role(StrEnum):
    """What a server is to its peers. Unused until failover (persisted in the data dir's metadata)."""

    PRIMARY = "primary"
    REPLICA = "replica"


class VerifyMode(StrEnum):
    """How much the log's open verifies (``--verify-on-start``; log/file.py)."""

    AUTO = "auto"
    FULL = "full"
    TAIL = "tail"


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    mode: FsyncMode
    interval_ms: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", FsyncMode(self.mode))

    @classmethod
    def parse(cls, text: str) -> "FsyncPolicy":
        text = text.strip().lower()
        if text in (FsyncMode.ALWAYS, FsyncMode.NEVER):
            return cls(FsyncMode(text))
        m = re.fullmatch(r"interval:(\d+)", text)
        if m and int(m.group(1)) > 0:
            return cls(FsyncMode.INTERVAL, int(m.group(1)))
        raise ValueError(f"fsync policy must be always, never or interval:<ms>, not {text!r}")

    def __str__(self) -> str:
        return f"interval:{self.interval_ms}" if self.mode is FsyncMode.INTERVAL else self.mode.value


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def format_size(n: int) -> str:
    """``64MiB`` for whole MiB or GiB, else the byte count (as --help shows sizes)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


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


E = TypeVar("E", bound=StrEnum)


def _enum(cls: type[E]) -> Callable[[Any], E]:
    choice = _choice(*(m.value for m in cls))
    return lambda value: cls(choice(value))


def _fsync(value: Any) -> FsyncPolicy:
    if isinstance(value, FsyncPolicy):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be always, never or interval:<ms>, not {value!r}")
    return FsyncPolicy.parse(value)


def parse_host_port(value: Any) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); the host is required.
    ``off`` is None (a flag can turn off what the TOML file turned on)."""
    text = value if isinstance(value, str) else ""
    if text.strip().lower() == "off":
        return None
    m = re.fullmatch(r"\s*(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})\s*", text)
    if not m or int(m.group(3)) > 65535:
        raise ValueError(f"must be HOST:PORT such as 127.0.0.1:9464 or [::1]:9464, or off, not {value!r}")
    return m.group(1) or m.group(2), int(m.group(3))


def parse_addresses(value: Any) -> tuple[str, ...]:
    """``HOST:PORT`` addresses: a comma-separated string, or a list of them (a TOML
    list, or a repeated flag); ``none`` or ``""`` is none."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"must be HOST:PORT addresses, not {item!r}")
        for part in item.split(","):
            part = part.strip()
            if not part or part.lower() == "none":
                continue
            try:
                ok = part.lower() != "off" and parse_host_port(part) is not None
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"must be HOST:PORT addresses (such as 10.0.0.2:1774 or "
                                 f"[::1]:1774), comma-separated, not {part!r}")
            out.append(part)
    return tuple(dict.fromkeys(out))


def parse_bool(value: Any) -> bool:
    """A TOML boolean; on the command line such a setting is a switch (cli.py)."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _show(value: Any) -> str:
    """A default as --help shows it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


# -- the table ------------------------------------------------------------------------


class Setting(NamedTuple):
    name: str  # the ServerConfig field and TOML key; the flag is --name-with-dashes
    parse: Callable[[Any], Any]  # a flag's string or a TOML value -> the typed value
    default: str  # as --help shows it
    help: str

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    @property
    def switch(self) -> bool:
        """A boolean: on the command line a flag without a value."""
        return self.parse is parse_bool

    @property
    def repeatable(self) -> bool:
        """A list: on the command line the flag may be given several times."""
        return self.parse is parse_addresses


T = TypeVar("T")


def _setting(default: T, parse: Callable[[Any], T], help: str, *, show: Callable[[T], str] = _show,
             shown: str | None = None, factory: Callable[[], T] | None = None) -> T:
    """One row: a ServerConfig field whose metadata carries the parser and the help.

    ``factory`` computes the default when a config is made (``default`` is
    then only what the type checker sees); ``shown`` overrides how --help
    shows it.
    """
    row = Setting("", parse, shown if shown is not None else show(default), help)
    if factory is not None:
        return field(default_factory=factory, metadata={"setting": row})
    return field(default=default, metadata={"setting": row})


MiB = 1 << 20


class _Table:
    """What a settings table does: ``with_overrides``. ServerConfig and the
    follower's FollowerConfig are both tables of ``_setting`` rows."""

    PROGRAM = "logd serve"

    def with_overrides(self: "C", values: dict[str, Any], source: str = "") -> "C":
        """Apply ``values`` (TOML keys or flag names); None means "not given".

        Raises:
            ConfigError: an unknown key or a bad value, named as
                ``<source>: <key>: ...`` (or ``--<flag>: ...`` without a source).
        """
        by_name = {s.name: s for s in settings_of(type(self))}
        clean: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            where = f"{source}: {key}" if source else f"--{name.replace('_', '-')}"
            setting = by_name.get(name)
            if setting is None:
                raise ConfigError(f"{where}: unknown setting ({self.PROGRAM} --help lists them)")
            if value is None:
                continue
            try:
                clean[name] = setting.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        return dataclasses.replace(self, **clean)  # type: ignore[type-var]


C = TypeVar("C", bound=_Table)


def settings_of(table: type[_Table]) -> tuple[Setting, ...]:
    """A table's rows, in order."""
    return tuple(f.metadata["setting"]._replace(name=f.name) for f in fields(table))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ServerConfig(_Table):
    """Every setting of ``logd serve``, one row each: type, default, parser, help.

    Flags, TOML keys and ``--help`` all come from these rows; a new setting is
    one more row (and its use).
    """

    host: str = _setting("127.0.0.1", _text, "address to listen on")
    port: int = _setting(1774, _int(0, 65535), "TCP port, 0 for any free one")
    unix: str | None = _setting(None, _text, "also listen on this unix domain socket path")
    data_dir: str = _setting("", _text, "data directory", factory=_default_data_dir,
                             shown="$STATE_DIRECTORY or ./logd-data")
    fsync: FsyncPolicy = _setting(FsyncPolicy(FsyncMode.ALWAYS), _fsync, "always | interval:<ms> | never")
    partition_size: int = _setting(64 * MiB, _size(1), "roll partitions at this size", show=format_size)
    index_interval: int = _setting(4096, _size(1), "bytes between sparse index entries", show=format_size)
    retain_bytes: int = _setting(0, _size(0), "delete the oldest closed partitions past this total size, "
                                 "0 = keep all", show=format_size)
    retain_age: float = _setting(0.0, _duration, "delete closed partitions older than this (e.g. 7d), "
                                 "0 = keep all")
    verify_on_start: VerifyMode = _setting(
        VerifyMode.AUTO, _enum(VerifyMode),
        "auto: after a clean stop trust what the marker covers, after a crash verify what "
        "follows the recovery point; full: verify every record; tail: trust sane indexes")
    allow_corrupt: bool = _setting(False, parse_bool, "start despite corrupt records mid-log; READ reports them")
    refuse: bool = _setting(False, parse_bool,
                            "read replica: serve READ, HEAD, STATS and tails from a data directory another "
                            "process (logd-follower) writes; MSG gets ERR_CLIENT REFUSED; never write the directory")
    watch: str = _setting("auto", _choice("auto", "inotify", "poll"),
                          "with --refuse, how new data is noticed: inotify, poll (every --watch-interval), "
                          "auto: inotify where available")
    watch_interval: float = _setting(0.1, _duration, "with --refuse --watch poll: seconds between looks")
    # -- synchronous replication (events/acks.py; docs/server.rst) --
    min_acks: int = _setting(0, _int(0, 64),
                             "acknowledge a MSG only once this many followers have it (written, or fsynced "
                             "when the follower runs --fsync always); readers see only such ids. 0 = off")
    ack_timeout: float = _setting(5.0, _duration,
                                  "with --min-acks: after this long a MSG not confirmed gets ERR NOTREPLICATED "
                                  "(it stays on the primary); 0 = wait as long as it takes")
    # -- admin commands and failover (issue 10) --
    admin_from: tuple[str, ...] = _setting(
        admin.DEFAULT_ADMIN_FROM, admin.parse_networks,
        "addresses or networks that may send SHUTDOWN, REFUSE and ACCEPT, comma-separated, or "
        "'none' (the unix socket always may)")
    admin_token: str | None = _setting(
        None, _text, "a token that lets any peer send admin commands after AUTH <token> "
        "(visible in ps: prefer --admin-token-file)", shown="none")
    admin_token_file: str | None = _setting(
        None, _text, "read the admin token from the first line of this file", shown="none")
    peer: tuple[str, ...] = _setting(
        (), parse_addresses, "a server to ask for its epoch when this one restarts after an "
        "unclean stop, besides the followers it served (docs/server.rst); HOST:PORT, repeatable or "
        "comma-separated", shown="none")
    peer_timeout: float = _setting(3.0, _duration, "bound on that unclean-restart peer check, all peers "
                                   "asked at once; none answering means starting refusing")
    metrics: tuple[str, int] | None = _setting(
        None, parse_host_port, "serve Prometheus metrics at http://HOST:PORT/metrics (docs/metrics.rst)",
        shown="off")
    max_clients: int = _setting(10_000, _int(1), "connections served at once")
    max_line: int = _setting(1024, _int(16), "longest command or length line")
    max_message: int = _setting(1 * MiB, _size(1), "largest message", show=format_size)
    max_args: int = _setting(10_000, _int(1), "most messages in one MSG")
    max_request: int = _setting(64 * MiB, _size(1), "largest request, all arguments together", show=format_size)
    max_pipeline: int = _setting(1024, _int(1), "replies pending per connection before reading pauses")
    idle_timeout: float = _setting(0.0, _duration, "close connections idle this many seconds, 0 = never")
    partial_timeout: float = _setting(30.0, _duration,
                                      "close a connection whose command stays incomplete this long")
    send_timeout: float = _setting(30.0, _duration, "drop a reader that takes no bytes this long")
    shutdown_timeout: float = _setting(10.0, _duration, "bound on each graceful shutdown step")
    stall_timeout: float = _setting(30.0, _duration, "under systemd's WatchdogSec=: withhold the watchdog's "
                                    "pings while an fsync or a commit is this late (systemd restarts logd)")
    log_level: str = _setting("info", _choice("debug", "info", "warning", "error"), "log level")
    log_format: str = _setting("auto", _choice("auto", "json", "console"),
                               "auto: JSON lines off a terminal, human-readable on one")


SETTINGS: tuple[Setting, ...] = settings_of(ServerConfig)


def load(path: str | None, flags: dict[str, Any]) -> ServerConfig:
    """``logd serve``'s settings: see ``load_table``."""
    return load_table(path, flags, ServerConfig)


def load_table(path: str | None, flags: dict[str, Any], table: type[C]) -> C:
    """Defaults, then the TOML file at ``path``, then the flags that were given.

    Raises:
        ConfigError: the file cannot be read or parsed, or a value is bad.
    """
    config = table()
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
