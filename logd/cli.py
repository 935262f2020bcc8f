"""The ``logd`` command: ``serve``, the client subcommands, and the offline tools."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]

# flag -> (type, help), from the one settings table in config.py (defaults,
# checks and help in one place). Values stay strings here: config.load checks
# them, with the same messages as for TOML values.
def _serve_flags() -> dict[str, tuple[type, str]]:
    from .config import SETTINGS

    return {s.flag: (str, f"{s.help} [default: {s.default}]")
            for s in SETTINGS if s.name != "allow_corrupt"}  # a store_true flag of its own


_SERVE_FLAGS: dict[str, tuple[type, str]] = _serve_flags()


def _serve(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from . import logconfig
    from .errors import LogdError

    flags = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name in _SERVE_FLAGS}
    flags["allow_corrupt"] = args.allow_corrupt
    try:
        config = config_mod.load(args.config, flags)
    except config_mod.ConfigError as exc:
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
