"""The client subcommands of ``logd``: write, read, head, stats, ping.

``logd/cli.py`` calls ``register(subparsers)``; each subcommand sets
``func(args) -> exit code``. Conventions follow kcat, journalctl and
redis-cli (docs/client.rst has the user's view):

- ``-H/--host host:port`` (or a unix socket path) on every subcommand,
  defaulting to ``$LOGD_HOST``, then ``127.0.0.1:1774``.
- Human output when stdout is a terminal; JSON lines when it is not.
- A live count on stderr for long writes and reads when stderr is a terminal.
- Exit codes (``EXIT_*``): 0 ok, 1 an error reply or a bad record, 2 usage,
  3 connection failure (including MAXCLIENTS and a server shutting down),
  4 not retained (the requested id was deleted by retention), 130 interrupted
  (SIGINT), 143 terminated (SIGTERM; ``read`` saves its cursor first).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
from typing import IO, Any, Callable, Iterable, Iterator

from . import errors
from .checkpoint import Checkpoint, CheckpointError
from .client import DEFAULT_PORT, Client, batches, connect

__all__ = [
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_CONNECTION",
    "EXIT_NOT_RETAINED",
    "EXIT_INTERRUPTED",
    "register",
    "main",
    "exit_code",
    "parse_from",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_NOT_RETAINED = 4
EXIT_INTERRUPTED = 130

DEFAULT_HOST = f"127.0.0.1:{DEFAULT_PORT}"
# stdout is flushed (and the cursor saved) at least this often while records stream in.
OUT_CHUNK = 256 * 1024


class UsageError(Exception):
    """A bad option value found after argparse (exit 2)."""


class _Terminated(BaseException):
    """SIGTERM during read: unwind so the cursor file is flushed (not an Exception on purpose)."""

    exit_status = 128 + signal.SIGTERM


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an exception that ended a subcommand."""
    if isinstance(exc, errors.NotRetained):
        return EXIT_NOT_RETAINED
    if isinstance(exc, (errors.ConnectionLost, errors.TooManyClients, errors.ShuttingDown)):
        return EXIT_CONNECTION
    if isinstance(exc, (UsageError, CheckpointError, ValueError)):
        return EXIT_USAGE
    if isinstance(exc, _Terminated):
        return _Terminated.exit_status
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.NotRetained):
        return (
            f"not retained: {exc.message} (first retained id is {exc.first}, head is {exc.head}; "
            "try --from begin)"
        )
    if isinstance(exc, errors.OutOfRange):
        return f"out of range: {exc.message} (first={exc.first} head={exc.head})"
    if isinstance(exc, errors.Refused):
        tail = f"; the primary is {exc.primary}" if exc.primary else ""
        return f"refused: {exc.message}{tail}"
    if isinstance(exc, errors.LogdError):
        return f"{exc.code}: {exc.message}" if exc.message else exc.code
    return str(exc)


def _command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn exceptions into a message on stderr and the documented exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (errors.LogdError, UsageError, CheckpointError, ValueError) as exc:
            print(f"logd {args.client_command}: {_describe(exc)}", file=sys.stderr)
            return exit_code(exc)
        except (KeyboardInterrupt, _Terminated) as exc:
            return exit_code(exc)
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_OK

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def _silence_stdout() -> None:
    """After EPIPE (``logd read | head``), keep Python's exit-time flush quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class Progress:
    """A live count on stderr, only on a terminal, only once an operation runs long."""

    def __init__(self, verb: str, stream: IO[str] | None = None, delay: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.verb = verb
        self.count = 0
        self._start = time.monotonic()
        self._next = self._start + delay
        self._shown = False

    def add(self, n: int, last_id: int = 0) -> None:
        self.count += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 0.2
            rate = self.count / max(now - self._start, 1e-9)
            at = f", id {last_id}" if last_id else ""
            self.stream.write(f"\r{self.verb} {self.count:,} records ({rate:,.0f}/s{at})\x1b[K")
            self.stream.flush()
            self._shown = True

    def done(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _client(args: argparse.Namespace) -> Client:
    return connect(args.host, timeout=args.timeout, connect_timeout=min(args.timeout, 5.0))


# -- write ----------------------------------------------------------------------------


def _stdin_bodies(stream: IO[bytes], skipped: list[int]) -> Iterator[bytes]:
    """One body per line without its ``\\n`` (and a ``\\r`` before it); empty lines are skipped."""
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        if line:
            yield line
        else:
            skipped[0] += 1


def cmd_write(args: argparse.Namespace) -> int:
    """Append messages: the arguments, or else one per stdin line."""
    skipped = [0]
    bodies: Iterable[bytes]
    if args.messages:
        bodies = [os.fsencode(m) for m in args.messages]
        if any(not b for b in bodies):
            raise UsageError("empty message not allowed")
    else:
        bodies = _stdin_bodies(sys.stdin.buffer, skipped)
    out = sys.stdout
    summary = not args.quiet and _isatty(out)
    ranges: list[range] = []
    written = 0
    progress = Progress("wrote")
    try:
        with _client(args) as client:
            for ids in client.append_stream(batches(bodies, args.batch, args.batch_bytes)):
                written += len(ids)
                progress.add(len(ids), ids[-1])
                if args.quiet:
                    continue
                if summary:
                    _merge(ranges, ids)
                else:
                    out.write("\n".join(map(str, ids)))
                    out.write("\n")
    except errors.LogdError:
        progress.done()
        if written:
            print(f"logd write: {written} messages were written before the error", file=sys.stderr)
        raise
    progress.done()
    if summary:
        _print_summary(ranges, written, out)
    if skipped[0]:
        print(f"logd write: skipped {skipped[0]} empty lines", file=sys.stderr)
    return EXIT_OK


def _merge(ranges: list[range], ids: range) -> None:
    if ranges and ranges[-1].stop == ids.start:
        ranges[-1] = range(ranges[-1].start, ids.stop)
    else:
        ranges.append(ids)


def _print_summary(ranges: list[range], written: int, out: IO[str]) -> None:
    if written <= 20:
        for r in ranges:
            for i in r:
                print(i, file=out)
        return
    shown = ", ".join(f"{r.start}-{r[-1]}" if len(r) > 1 else str(r.start) for r in ranges[:5])
    more = f", ... ({len(ranges) - 5} more ranges)" if len(ranges) > 5 else ""
    print(f"wrote {written:,} messages: ids {shown}{more}", file=out)


# -- read -----------------------------------------------------------------------------


def parse_from(value: str) -> tuple[str, int]:
    """Parse ``--from``: ``("id", N)``, ``("begin", 0)``, ``("end", 0)`` or ``("last", N)``.

    Raises:
        UsageError: anything else.
    """
    v = value.strip().lower()
    if v in ("begin", "beginning", "first", "start"):
        return "begin", 0
    if v in ("end", "now"):
        return "end", 0
    if v.startswith("-") and v[1:].isdigit() and int(v[1:]) > 0:
        return "last", int(v[1:])
    if v.isdigit() and int(v) > 0:
        return "id", int(v)
    raise UsageError(f"--from must be an id >= 1, begin, end or -N; got {value!r}")


def _format_json(rec_id: int, body: bytes) -> bytes:
    try:
        obj: dict[str, Any] = {"id": rec_id, "body": body.decode("utf-8")}
    except UnicodeDecodeError:
        obj = {"id": rec_id, "body_base64": base64.b64encode(body).decode("ascii")}
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


_HUMAN_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"})


def _format_text(rec_id: int, body: bytes) -> bytes:
    text = body.decode("utf-8", "backslashreplace").translate(_HUMAN_ESCAPES)
    return f"{rec_id}\t{text}\n".encode("utf-8", "backslashreplace")


def _format_raw(rec_id: int, body: bytes) -> bytes:
    return body + b"\n"


_FORMATS = {"json": _format_json, "text": _format_text, "raw": _format_raw}


def cmd_read(args: argparse.Namespace) -> int:
    """Print records; with -f, keep following."""
    if args.n is not None and args.n < 0:
        raise UsageError("-n must be >= 0")
    mode, value = parse_from(args.from_) if args.from_ else ("begin", 0)
    fmt = args.output or ("text" if _isatty(sys.stdout) else "json")
    cursor = Checkpoint(args.cursor_file, every=100_000, interval=1.0) if args.cursor_file else None
    if cursor is not None and cursor.last_id is not None:
        mode, value = "id", cursor.last_id + 1  # journalctl: the cursor file wins over --from
    old_term = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with _client(args) as client:
            return _read(client, args, mode, value, _FORMATS[fmt], cursor)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if cursor is not None:
            cursor.flush()


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _read(
    client: Client,
    args: argparse.Namespace,
    mode: str,
    value: int,
    fmt: Callable[[int, bytes], bytes],
    cursor: Checkpoint | None,
) -> int:
    head = client.head()
    if mode == "end":
        start = head + 1
    elif mode == "last":
        start = max(1, head - value + 1)
    elif mode == "begin":
        start = 1  # the first retained id is learnt from NOTRETAINED below
    else:
        start = value
    count = args.n  # None: no cap
    records: Iterator[Any] | None = None
    for _attempt in range(5):  # retention may move while we start; bounded
        if args.follow:
            if count == 0:
                return EXIT_OK
            records = (
                client.follow(start, reconnect=args.reconnect, on_reconnect=_report_reconnect)
                if count is None
                else client.read(start, count, timeout=None)
            )
        else:
            if start > head + 1:
                records = client.read(start, 1)  # the server answers RANGE
            else:
                available = head - start + 1
                limit = available if count is None else min(count, available)
                if limit <= 0:
                    return EXIT_OK
                records = client.read(start, limit)
        try:
            first = next(records)
        except StopIteration:
            return EXIT_OK
        except errors.NotRetained as exc:
            if mode not in ("begin", "last") or exc.first <= start:
                raise
            start = exc.first
            continue
        return _emit(client, _chain(first, records), fmt, cursor)
    raise errors.LogdError("the first retained id kept moving; giving up")


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _report_reconnect(failures: int, exc: BaseException) -> None:
    print(f"logd read: connection lost ({exc}); reconnecting (attempt {failures})", file=sys.stderr)


def _emit(
    client: Client, records: Iterator[Any], fmt: Callable[[int, bytes], bytes], cursor: Checkpoint | None
) -> int:
    """Write records to stdout; save the cursor only for records stdout has accepted."""
    out = sys.stdout.buffer
    progress = Progress("read")
    chunk: list[bytes] = []
    size = 0
    last_id = 0

    def flush() -> None:
        nonlocal size
        if chunk:
            out.write(b"".join(chunk))
            chunk.clear()
            size = 0
        out.flush()
        if cursor is not None and last_id:
            cursor.save(last_id)  # batched by the Checkpoint; flushed at exit

    try:
        for rec in records:
            line = fmt(rec.id, rec.body)
            chunk.append(line)
            size += len(line)
            last_id = rec.id
            progress.add(1, rec.id)
            # Flush when a chunk is full, or when the next record would
            # block: a follower's output and cursor are then current.
            if size >= OUT_CHUNK or client.buffered == 0:
                flush()
    finally:
        progress.done()
        flush()  # also on errors: every record buffered so far passed its checks
    return EXIT_OK


# -- head, stats, ping ------------------------------------------------------------------


def cmd_head(args: argparse.Namespace) -> int:
    """Print the newest id (0 on an empty log)."""
    with _client(args) as client:
        print(client.head())
    return EXIT_OK


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the server's counters."""
    with _client(args) as client:
        stats = client.stats()
    fmt = args.output or ("text" if _isatty(sys.stdout) else "json")
    if fmt == "json":
        print(json.dumps(_jsonable(stats), sort_keys=False))
    else:
        width = max((len(k) for k in stats), default=0)
        for key, value in stats.items():
            print(f"{key + ':':<{width + 1}} {_jsonable(value)}")
    return EXIT_OK


def cmd_ping(args: argparse.Namespace) -> int:
    """Round trip a PING."""
    with _client(args) as client:
        rtt = client.ping()
    if _isatty(sys.stdout):
        print(f"PONG ({rtt * 1000:.2f} ms)")
    else:
        print("PONG")
    return EXIT_OK


def cmd_shutdown(args: argparse.Namespace) -> int:
    """Stop the server gracefully; exit 0 once it acknowledged and closed the connection."""
    with _client(args) as client:
        client.shutdown()
    if _isatty(sys.stdout):
        print(f"{args.host}: shutting down")
    return EXIT_OK


# -- argparse -------------------------------------------------------------------------

EXIT_CODES_HELP = """\
exit codes:
  0  ok
  1  the server answered with an error, or a record failed its checksum/sequence check
  2  usage error
  3  connection failure (refused, lost, timed out, too many clients, server shutting down)
  4  not retained: the requested id was removed by retention
"""


def _positive_float(value: str) -> float:
    f = float(value)
    if f <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return f


def register(subparsers: Any) -> None:
    """Add write, read, head, stats and ping to an argparse subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-H",
        "--host",
        default=os.environ.get("LOGD_HOST") or DEFAULT_HOST,
        metavar="ADDR",
        help="server as host:port or a unix socket path (default: $LOGD_HOST or %(default)s)",
    )
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the server (default: %(default)s)",
    )

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, desc: str) -> Any:
        p = subparsers.add_parser(
            name,
            parents=[common],
            help=help,
            description=desc,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=_command(func), client_command=name)
        return p

    p = add(
        "write",
        cmd_write,
        "append messages",
        "Append each MESSAGE, or with none, one message per line of stdin (empty lines are\n"
        "skipped; a trailing \\r is removed). Prints the ids written, one per line; on a\n"
        "terminal, a summary once there are many.",
    )
    p.add_argument("messages", nargs="*", metavar="MESSAGE")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print ids")
    p.add_argument("--batch", type=int, default=1000, metavar="N", help="messages per MSG request")
    p.add_argument(
        "--batch-bytes", type=int, default=1024 * 1024, metavar="B", help="bytes per MSG request"
    )

    p = add(
        "read",
        cmd_read,
        "print records",
        "Print records from --from up to the head at start (or -n of them); -f keeps\n"
        "following. Output is 'id<TAB>body' on a terminal and JSON lines otherwise\n"
        '({"id": N, "body": "..."}, or "body_base64" for bodies that are not UTF-8).',
    )
    p.add_argument(
        "--from",
        dest="from_",
        metavar="WHERE",
        help="an id, begin (first retained, the default), end (only new records) or -N (the last N)",
    )
    p.add_argument("-n", type=int, metavar="N", help="stop after N records")
    p.add_argument("-f", "--follow", action="store_true", help="keep reading new records")
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="with -f: reconnect after a lost connection or restart, resuming after the last id",
    )
    p.add_argument(
        "--cursor-file",
        metavar="FILE",
        help="start after the id saved in FILE (overrides --from) and save the last id printed",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("raw", "json", "text"),
        help="raw: bodies only; json: JSON lines; text: id<TAB>body (default: text on a terminal, else json)",
    )

    add("head", cmd_head, "print the newest id", "Print the newest id, 0 on an empty log.")

    p = add("stats", cmd_stats, "print server counters", "Print the server's counters.")
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        help="text: key: value lines; json: one object (default: text on a terminal, else json)",
    )

    add("ping", cmd_ping, "check the server answers", "Send PING; print PONG.")
    add(
        "shutdown",
        cmd_shutdown,
        "stop the server gracefully",
        "Send SHUTDOWN: the server stops accepting, answers what is in flight, ends\n"
        "streams, flushes and exits 0. Exits 0 once the server has acknowledged and\n"
        "closed the connection. Accepted only over loopback or the unix socket.",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the client subcommands alone (``python -m logd.clientcli``), for tests and debugging."""
    parser = argparse.ArgumentParser(prog="logd", epilog=EXIT_CODES_HELP)
    sub = parser.add_subparsers(dest="subcommand", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
