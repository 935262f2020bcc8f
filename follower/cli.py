"""``logd-follower``: keep a byte-identical copy of a primary's log.

Exit codes (README.rst, "Replication"):

  0   stopped by SIGTERM or SIGINT, or handed over: the primary refused and
      named this copy's server (--advertise) as the new primary; the copy
      holds the primary's final id, fsynced, and the writer lock is free
  1   could not start (e.g. the directory is locked by another writer, named), or an fsync failed
  2   bad flags or config file
  10  NOTRETAINED: the copy's position is no longer retained on the primary;
      the copy is kept untouched (--resync moves it aside and copies afresh)
  11  DIVERGED: the primary's log is another history, or not a continuation of
      the copy; the copy is kept untouched (--resync: as for 10)
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    from logd import __version__

    from .config import SETTINGS

    parser = argparse.ArgumentParser(
        prog="logd-follower", description="Keep a byte-identical copy of a logd primary's log.",
        epilog=__doc__.split("Exit codes", 1)[1].join(("exit codes", "")),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"logd-follower {__version__}")
    parser.add_argument("--config", help="TOML file with settings (flags win)")
    for s in SETTINGS:
        if s.switch:  # as logd serve's: given means true
            parser.add_argument(f"--{s.flag}", action="store_true", default=None, help=s.help)
        elif s.name == "primary":  # repeatable: every address, in order
            parser.add_argument(f"--{s.flag}", action="append", default=None, help=f"{s.help} [{s.default}]")
        else:
            parser.add_argument(f"--{s.flag}", default=None, help=f"{s.help} [default: {s.default}]")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from logd import config as config_mod
    from logd import logconfig

    from .config import SETTINGS, FollowerConfig

    args = build_parser().parse_args(argv)
    flags = {s.name: getattr(args, s.name) for s in SETTINGS}
    try:
        config = config_mod.load_table(args.config, flags, FollowerConfig)
    except config_mod.ConfigError as exc:
        print(f"logd-follower: {exc}", file=sys.stderr)
        return 2
    if not config.primary or not config.data_dir:
        print("logd-follower: --primary HOST:PORT and --data-dir DIR are required", file=sys.stderr)
        return 2
    logconfig.configure(config.log_level, config.log_format)

    from .process import Follower

    return Follower(config).run()
