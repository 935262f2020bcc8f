"""The ``logd`` command: ``serve``, the client subcommands, and the offline tools."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]

def _add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """One flag per row of the settings table (config.py): its help and shown
    default come from there. Values stay strings here: config.load checks
    them, with the same messages as for TOML values."""
    from .config import SETTINGS

    for s in SETTINGS:
        if s.switch:  # given: true; there is no --no-... form, the TOML file can say false
            serve.add_argument(f"--{s.flag}", action="store_true", default=None, help=s.help)
        elif s.repeatable:  # each use adds to the list (config.parse_addresses takes it)
            serve.add_argument(f"--{s.flag}", action="append", default=None,
                               help=f"{s.help} [default: {s.default}]")
        else:
            serve.add_argument(f"--{s.flag}", default=None, help=f"{s.help} [default: {s.default}]")


def _serve(args: argparse.Namespace) -> int:
    from . import config as config_mod
    from . import logconfig

    flags = {s.name: getattr(args, s.name) for s in config_mod.SETTINGS}
    try:
        config = config_mod.load(args.config, flags)
    except config_mod.ConfigError as exc:
        print(f"logd serve: {exc}", file=sys.stderr)
        return 2
    logconfig.configure(config.log_level, config.log_format)

    from .daemon import Daemon

    return Daemon(config).run()  # 0, or 1 after logging startup_failed


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
    _add_serve_flags(serve)
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
