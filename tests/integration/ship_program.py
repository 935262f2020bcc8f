"""A program that logs through ``logd.ship.LogdShipper``, for tests/integration/test_ship.py.

    python ship_program.py ADDRESS COUNT [--gevent] [--pause S] [--max-events N]
        [--exit-timeout S] [--then COUNT]

Logs COUNT events ``step`` with ``i`` (0..COUNT-1) and a few kinds of value,
prints ``logged`` and the seconds it took, waits ``--pause`` seconds (the
test changes the server meanwhile), logs ``--then`` more events (``i``
continues), prints ``done``, and exits: the atexit flush waits up to
``--exit-timeout`` seconds.
"""

from __future__ import annotations

import sys

if "--gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse
import time

import structlog

from logd.ship import LogdShipper


class Opaque:
    def __str__(self) -> str:
        return "opaque!"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("count", type=int)
    p.add_argument("--gevent", action="store_true")
    p.add_argument("--pause", type=float, default=0.0)
    p.add_argument("--then", type=int, default=0)
    p.add_argument("--max-events", type=int, default=10_000)
    p.add_argument("--exit-timeout", type=float, default=2.0)
    args = p.parse_args()
    shipper = LogdShipper(args.address, max_events=args.max_events, exit_timeout=args.exit_timeout,
                          batch=50)
    structlog.configure(
        processors=[structlog.processors.add_log_level, shipper, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(open("/dev/null", "w")),
    )
    log = structlog.get_logger()
    t0 = time.monotonic()
    for i in range(args.count):
        log.info("step", i=i, text=f"line {i}", ratio=i / 2, tags=["a", i], obj=Opaque())
    print("logged", f"{time.monotonic() - t0:.3f}", flush=True)
    if args.pause:
        time.sleep(args.pause)
    for i in range(args.count, args.count + args.then):
        log.info("step", i=i, text=f"line {i}", ratio=i / 2, tags=["a", i], obj=Opaque())
    print("done", shipper.dropped, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
