"""The ``logd`` command: ``serve``, the client subcommands, and the offline tools."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]

# flag -> (type, help); defaults live in config.ServerConfig, so a TOML file
# can supply what the command line does not.
_SERVE_FLAGS: dict[str, tuple[type, str]] = {
    "host": (str, "address to listen on [127.0.0.1]"),
    "port": (int, "TCP port, 0 for any free one [1774]"),
    "unix": (str, "also listen on this unix domain socket path"),
    "data-dir": (str, "data directory [$STATE_DIRECTORY or ./logd-data]"),
    "fsync": (str, "always | interval:<ms> | never [always]"),
    "partition-size": (str, "roll partitions at this size [64MiB]"),
    "index-interval": (str, "bytes between sparse index entries [4096]"),
    "retain-bytes": (str, "delete the oldest closed partitions past this total size, 0 = keep all [0]"),
    "retain-age": (str, "delete closed partitions older than this (e.g. 7d), 0 = keep all [0]"),
    "verify-on-start": (str, "full: check every record at startup; tail: trust sane indexes [full]"),
    "max-clients": (int, "connections served at once [10000]"),
    "max-line": (int, "longest command or length line [1024]"),
    "max-message": (str, "largest message [1MiB]"),
    "max-args": (int, "most messages in one MSG [10000]"),
    "max-request": (str, "largest request, all arguments together [64MiB]"),
    "max-pipeline": (int, "replies pending per connection before reading pauses [1024]"),
    "idle-timeout": (float, "close connections idle this many seconds, 0 = never [0]"),
    "partial-timeout": (float, "close a connection whose command stays incomplete this long [30]"),
    "send-timeout": (float, "drop a reader that takes no bytes this long [30]"),
    "shutdown-timeout": (float, "bound on each graceful shutdown step [10]"),
    "log-level": (str, "debug | info | warning | error [info]"),
    "log-format": (str, "auto | json | console [auto]"),
}


def _serve(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from . import logconfig
    from .errors import LogdError

    flags = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name in _SERVE_FLAGS}
    flags["allow_corrupt"] = args.allow_corrupt
    try:
        config = config_mod.load(args.config, flags)
    except (ValueError, OSError) as exc:
        print(f"logd serve: {exc}", file=sys.stderr)
        return 2
    logconfig.configure(config.log_level, config.log_format)

    import structlog

    from .daemon import Daemon

    log = structlog.get_logger("logd")
    try:
        daemon = Daemon(config)
    except (LogdError, OSError) as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    return daemon.run()


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="logd",
        description="A networked, sequenced log server.",
        epilog="client options (-H, --timeout) work before the subcommand too: logd -H host:port head",
    )
    parser.add_argument("--version", action="version", version=f"logd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser("serve", help="run the server", description="Run the logd server.")
    serve.add_argument("--config", help="TOML file with settings (flags win)")
    serve.add_argument("--allow-corrupt", action="store_true", default=None,
                       help="start despite corrupt records mid-log; READ reports them")
    for name, (typ, text) in _SERVE_FLAGS.items():
        serve.add_argument(f"--{name}", type=typ, default=None, help=text)
    serve.set_defaults(func=_serve)

    try:
        from . import clientcli
    except ImportError:  # pragma: no cover - while the client lands
        pass
    else:
        # redis-cli style: `logd -H host head`; the subcommand's own -H wins.
        clientcli.add_connection_options(parser, "global_")
        clientcli.register(sub)
    try:
        from . import tools
    except ImportError:  # pragma: no cover - while the tools land
        pass
    else:
        tools.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))
