"""A program that logs through ``logd.ship.LogdShipper``, for tests/integration/test_ship.py.

    python ship_program.py ADDRESS COUNT [--gevent] [--wait-file PATH] [--then COUNT]
        [--max-events N] [--batch N] [--linger S] [--exit-timeout S]

Logs COUNT events ``step`` with ``i`` (0..COUNT-1) and a few kinds of value,
prints ``logged`` and the seconds it took; with ``--wait-file``, waits (up to
60 s) for PATH to exist (the test changes the server meanwhile), then
flushes (up to 30 s) and prints ``flushed`` and whether it finished; logs
``--then`` more events (``i`` continues; with ``--fork``, after a flush, a
forked child logs them, then the parent logs ``--then`` more, and flushes
again and prints its reconnect count), prints ``done`` and the drop count,
and exits: the atexit flush waits up to ``--exit-timeout`` seconds.
"""

from __future__ import annotations

import sys

if "--gevent" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse
import os
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
    p.add_argument("--wait-file")
    p.add_argument("--fork", action="store_true", help="after the first COUNT, fork: the child logs --then")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--linger", type=float, default=0.005)
    p.add_argument("--then", type=int, default=0)
    p.add_argument("--max-events", type=int, default=10_000)
    p.add_argument("--exit-timeout", type=float, default=2.0)
    args = p.parse_args()
    shipper = LogdShipper(args.address, max_events=args.max_events, exit_timeout=args.exit_timeout,
                          batch=args.batch, linger=args.linger)
    structlog.configure(
        processors=[structlog.processors.add_log_level, shipper, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(open("/dev/null", "w")),
    )
    log = structlog.get_logger()
    t0 = time.monotonic()
    for i in range(args.count):
        log.info("step", i=i, text=f"line {i}", ratio=i / 2, tags=["a", i], obj=Opaque())
    print("logged", f"{time.monotonic() - t0:.3f}", flush=True)
    if args.wait_file:
        deadline = time.monotonic() + 60
        while not os.path.exists(args.wait_file) and time.monotonic() < deadline:
            time.sleep(0.02)
        print("flushed", shipper.flush(30.0), flush=True)  # the server is back: wait for the backlog
    first = args.count
    if args.fork:
        shipper.flush(10.0)  # connected: the child inherits the socket
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            print("child", os.waitstatus_to_exitcode(status), flush=True)
            first += args.then  # the parent logs its own --then after the child's
    for i in range(first, first + args.then):
        log.info("step", i=i, text=f"line {i}", ratio=i / 2, tags=["a", i], obj=Opaque())
    if args.fork:
        print("flushed", shipper.flush(10.0), "reconnects", shipper.stats["reconnects"], flush=True)
    print("done", shipper.dropped, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
