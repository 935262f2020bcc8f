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
  (SIGINT), 141 ``read``'s output closed early (EPIPE; the cursor is put back),
  143 terminated (SIGTERM; ``read`` saves its cursor first).
- Options also work before the subcommand (``logd -H host head``): cli.py
  stores them as ``global_host``/``global_timeout``; ``_resolve`` merges.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import signal
import sys
import time
from typing import IO, Any, Callable, Iterator

from . import errors
from .checkpoint import Checkpoint, CheckpointError
from .client import DEFAULT_PORT, Client, connect
from .config import parse_size
from .livewrite import LiveWriter
from .readout import ConsumerFailed, ExecSink, FdSink, OutputClosed, fields_of, logfmt, write_all
from .readout import jsonable as _jsonable

__all__ = [
    "EXIT_OK",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "EXIT_CONNECTION",
    "EXIT_NOT_RETAINED",
    "EXIT_INTERRUPTED",
    "EXIT_PIPE",
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
EXIT_PIPE = 128 + signal.SIGPIPE  # what a shell shows for a writer killed by SIGPIPE

DEFAULT_HOST = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_TIMEOUT = 10.0
DEFAULT_LINGER_MS = 5.0  # librdkafka's linger.ms default
# `read -f` without --from starts this many records back, as tail -f and journalctl -f do.
FOLLOW_BACKLOG = 10
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
    if isinstance(exc, (UsageError, CheckpointError, errors.BadAddress, ValueError)):
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
    if isinstance(exc, errors.ConnectionLost) and isinstance(
        exc.__cause__, (ConnectionRefusedError, FileNotFoundError)
    ):
        return (
            f"{exc.message}: is `logd serve` running there? Point at a server with "
            f"-H HOST:PORT (or a socket path) or $LOGD_HOST; the default is {DEFAULT_HOST}"
        )
    if isinstance(exc, errors.LogdError):
        return f"{exc.code}: {exc.message}" if exc.message else exc.code
    return str(exc)


def _command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn exceptions into a message on stderr and the documented exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            _resolve(args)
            if getattr(args, "wait", None) is not None and args.wait < 0:
                raise UsageError("--wait must be >= 0")
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


def _resolve(args: argparse.Namespace) -> None:
    """Merge options given after the subcommand, before it, and the defaults (in that order)."""
    args.host = (
        getattr(args, "host", None)
        or getattr(args, "global_host", None)
        or os.environ.get("LOGD_HOST")
        or DEFAULT_HOST
    )
    args.timeout = getattr(args, "timeout", None) or getattr(args, "global_timeout", None) or DEFAULT_TIMEOUT


def _client(args: argparse.Namespace, wait: float | None = None) -> Client:
    """Connect; for up to ``wait`` seconds (inf: forever), retry a server that is not up yet.

    The retrying (capped, jittered backoff) is the library's ``connect(wait=)``;
    the CLI only says once that it is waiting.
    """
    if wait is None:
        wait = getattr(args, "wait", None) or 0.0
    started = time.monotonic()
    try:
        return connect(args.host, timeout=args.timeout, connect_timeout=min(args.timeout, 5.0))
    except errors.ConnectionLost:
        if wait <= 0:
            raise
    print(f"logd {args.client_command}: waiting for the server at {args.host}", file=sys.stderr)
    left = max(0.0, wait - (time.monotonic() - started))
    return connect(args.host, timeout=args.timeout, connect_timeout=min(args.timeout, 5.0), wait=left)


# -- write ----------------------------------------------------------------------------


def cmd_write(args: argparse.Namespace) -> int:
    """Append messages: the arguments, or else one per stdin line, shipped as they come."""
    if args.batch < 1:
        raise UsageError("--batch must be >= 1")
    if args.linger < 0:
        raise UsageError("--linger must be >= 0")
    bodies: list[bytes] | None = None
    if args.messages:
        bodies = [os.fsencode(m) for m in args.messages]
        if any(not b for b in bodies):
            raise UsageError("empty message not allowed")
    out = sys.stdout.fileno()
    on_tty = _isatty(sys.stdout)
    ranges: list[range] = []
    progress = Progress("wrote")
    state = {"stdout_ok": True}

    def on_ack(ids: range) -> None:
        progress.add(len(ids), ids[-1])
        if args.quiet:
            return
        if on_tty:
            _merge(ranges, ids)
        elif state["stdout_ok"]:
            try:
                write_all(out, ("\n".join(map(str, ids)) + "\n").encode())
            except BrokenPipeError:  # `logd write | head`: keep writing, stop printing
                state["stdout_ok"] = False

    with _client(args) as client:
        writer = LiveWriter(
            client.connection,
            batch=args.batch,
            batch_bytes=args.batch_bytes,
            linger=args.linger / 1000.0,
            on_ack=on_ack,
            stop_wait=min(args.timeout, 5.0),
        )
        lost: errors.LogdError | None = None
        try:
            outcome = writer.run(None if bodies is not None else sys.stdin.fileno(), bodies)
        except errors.LogdError as exc:
            outcome, lost = writer.outcome, exc
    progress.done()
    if on_tty and not args.quiet:
        _print_summary(ranges, outcome.written, sys.stdout)
    error = lost or outcome.error
    stopped = bool(outcome.signal or error or outcome.in_flight or outcome.unsent)
    if stopped or (bodies is None and not args.quiet) or outcome.skipped:
        print(outcome.line(), file=sys.stderr)
    if error is not None:
        raise error
    if outcome.signal:
        return EXIT_INTERRUPTED if outcome.signal == signal.SIGINT else 128 + outcome.signal
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
    fields = fields_of(body)  # a msgpack map (logd.ship): its fields too, the body as before
    if fields is not None:
        obj["fields"] = _jsonable(fields)
    return json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n"


def _escape_table() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
    table.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})
    table.update({c: f"\\u{c:04x}" for c in range(0x80, 0xA0)})  # C1 controls (CSI is 0x9b)
    # Bytes that are not UTF-8 arrive as surrogateescape's U+DC80..U+DCFF.
    table.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})
    return table


# Every control character and the backslash are escaped, so a line is
# unambiguous and a body cannot move the cursor or recolour a terminal.
_TEXT_ESCAPES = _escape_table()


def _format_text(rec_id: int, body: bytes) -> bytes:
    fields = fields_of(body)  # a msgpack map (logd.ship): key=value, as structlog's console shows it
    if fields is not None:
        text = logfmt(fields, lambda s: s.translate(_TEXT_ESCAPES))
    else:
        text = body.decode("utf-8", "surrogateescape").translate(_TEXT_ESCAPES)
    return f"{rec_id}\t{text}\n".encode("utf-8")


def _format_raw(rec_id: int, body: bytes) -> bytes:
    return body + b"\n"


_FORMATS = {"json": _format_json, "text": _format_text, "raw": _format_raw}


def cmd_read(args: argparse.Namespace) -> int:
    """Print records (or hand them to --exec); with -f, keep following."""
    if args.n is not None and args.n < 0:
        raise UsageError("-n must be >= 0")
    if args.from_:
        mode, value = parse_from(args.from_)
    elif args.follow:
        mode, value = "last", FOLLOW_BACKLOG
    else:
        mode, value = "begin", 0
    default_fmt = "text" if _isatty(sys.stdout) and not args.exec_ else "json"
    fmt = args.output or default_fmt
    cursor = Checkpoint(args.cursor_file, every=100_000, interval=1.0) if args.cursor_file else None
    found = cursor.last_id if cursor is not None else None
    if found is not None:
        mode, value = "id", found + 1  # journalctl: the cursor file wins over --from
    sink: FdSink | ExecSink
    if args.exec_:
        sink = ExecSink(args.exec_, _save_now(cursor) if cursor is not None else None)
    else:
        sink = FdSink(sys.stdout.fileno(), cursor.save if cursor is not None else None)
    wait = args.wait if args.wait is not None else (float("inf") if args.follow and args.reconnect else 0.0)
    old_term = signal.signal(signal.SIGTERM, _raise_terminated)
    closed = False
    try:
        with _client(args, wait) as client:
            return _read(client, args, mode, value, _FORMATS[fmt], sink)
    except OutputClosed:
        closed = True
        _silence_stdout()
        if cursor is not None:
            cursor.restore(found)
            kept = "left at its start" if found is None else f"left at {found}"
            print(
                f"logd read: output closed after id {sink.taken} was written; cursor file {kept}, "
                "since records still in the pipe never reached the reader",
                file=sys.stderr,
            )
        return EXIT_PIPE
    except ConsumerFailed as exc:
        at = cursor.last_id if cursor is not None else None
        where = "" if cursor is None else f"; cursor file left at {at}" if at else "; cursor file not written"
        print(f"logd read: {exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if cursor is not None and not closed:
            cursor.flush()


def _save_now(cursor: Checkpoint) -> Callable[[int], None]:
    def save(rec_id: int) -> None:
        cursor.save(rec_id)
        cursor.flush()

    return save


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def _read(
    client: Client,
    args: argparse.Namespace,
    mode: str,
    value: int,
    fmt: Callable[[int, bytes], bytes],
    sink: FdSink | ExecSink,
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
        return _emit(client, _chain(first, records), fmt, sink, follow=args.follow)
    raise errors.LogdError("the first retained id kept moving; giving up")


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _report_reconnect(failures: int, exc: BaseException) -> None:
    print(f"logd read: connection lost ({exc}); reconnecting (attempt {failures})", file=sys.stderr)


def _caught_up(client: Client) -> bool:
    """Nothing parsed is waiting and nothing arrives within a moment: a follow is at the head."""
    if client.buffered:
        return False
    if not client.connected:
        return True
    ready, _, _ = select.select([client.connection], [], [], 0.05)
    return not ready


def _emit(
    client: Client,
    records: Iterator[Any],
    fmt: Callable[[int, bytes], bytes],
    sink: FdSink | ExecSink,
    follow: bool,
) -> int:
    """Hand records to the sink; it moves the cursor only for records its consumer took."""
    progress = Progress("read")
    last_id = 0
    exec_batches = isinstance(sink, ExecSink)
    try:
        for rec in records:
            sink.add(rec.id, fmt(rec.id, rec.body))
            last_id = rec.id
            progress.add(1, rec.id)
            # Flush when a chunk is full, or when the next record would
            # block: a follower's output and cursor are then current. An
            # --exec batch ends only once a follow has caught up.
            if sink.size >= OUT_CHUNK or client.buffered == 0:
                sink.flush(end_of_batch=follow and exec_batches and _caught_up(client))
    except errors.ConnectionLost as exc:
        _close_after_error(sink)
        last_id = sink.taken
        # The usual cause mid-read: a consumer that stopped taking bytes (`logd read | less`).
        raise errors.ConnectionLost(
            f"{exc.message} after id {last_id}. If this reader stopped taking bytes (a paused "
            f"`logd read | less`), the server dropped it after its --send-timeout (30 s by "
            f"default); resume with --from {last_id + 1}, or keep your place with --cursor-file"
        ) from exc
    except OutputClosed:
        raise
    except BaseException:
        _close_after_error(sink)  # every record handed over so far passed its checks
        raise
    finally:
        progress.done()
    sink.close(ok=True)
    return EXIT_OK


def _close_after_error(sink: FdSink | ExecSink) -> None:
    try:
        sink.close(ok=False)
    except ConsumerFailed:
        pass  # the batch did not count; the error that stopped the read is the news


# -- head, stats, ping ------------------------------------------------------------------


def cmd_head(args: argparse.Namespace) -> int:
    """Print the newest id (0 on an empty log)."""
    with _client(args) as client:
        print(client.head())
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the server's counters."""
    with _client(args) as client:
        stats = client.stats()
    fmt = args.output or ("text" if _isatty(sys.stdout) else "json")
    if fmt == "json":
        print(json.dumps(_jsonable(stats), sort_keys=False))
    else:
        rows = {k: v for k, v in stats.items() if not k.startswith("follower_")}
        width = max((len(k) for k in rows), default=0)
        for key, value in rows.items():
            print(f"{key + ':':<{width + 1}} {_jsonable(value)}")
        for line in follower_table(stats):
            print(line)
    return EXIT_OK


_FOLLOWER_COLUMNS = (("addr", "ADDRESS"), ("name", "NAME"), ("written", "WRITTEN P:O:ID"),
                     ("synced", "SYNCED P:O:ID"), ("lag_ids", "LAG IDS"),
                     ("lag_bytes", "LAG BYTES"), ("lag_seconds", "LAG S"),
                     ("connected_since", "CONNECTED SINCE"), ("last_report", "LAST REPORT"))


def follower_table(stats: dict[str, Any]) -> list[str]:
    """The primary's ``follower_<conn>`` STATS lines (``key=value`` words) as a table
    a person can read, oldest connection first; no lines when there are none."""
    followers = []
    for key, value in stats.items():
        number = key[len("follower_"):]
        if key.startswith("follower_") and number.isdigit():
            words = dict(w.split("=", 1) for w in str(_jsonable(value)).split() if "=" in w)
            followers.append((int(number), [words.get(field, "-") for field, _ in _FOLLOWER_COLUMNS]))
    if not followers:
        return []
    table = [[title for _, title in _FOLLOWER_COLUMNS]] + [cells for _, cells in sorted(followers)]
    widths = [max(len(row[i]) for row in table) for i in range(len(_FOLLOWER_COLUMNS))]
    return [""] + ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                                 for row in table]


def cmd_ping(args: argparse.Namespace) -> int:
    """Round trip a PING."""
    with _client(args) as client:
        rtt = client.ping()
    if _isatty(sys.stdout):
        print(f"PONG ({rtt * 1000:.2f} ms)")
    else:
        print("PONG")
    return EXIT_OK


ADMIN_TOKEN_ENV = "LOGD_ADMIN_TOKEN"


def _admin_client(args: argparse.Namespace, host: str | None = None) -> Client:
    """A connection for admin commands (to ``host``, else -H): ``AUTH`` first when
    ``$LOGD_ADMIN_TOKEN`` is set."""
    client = _client(args) if host is None else connect(
        host, timeout=args.timeout, connect_timeout=min(args.timeout, 5.0))
    token = os.environ.get(ADMIN_TOKEN_ENV, "")
    if token:
        try:
            client.auth(token)
        except BaseException:
            client.close()
            raise
    return client


def cmd_shutdown(args: argparse.Namespace) -> int:
    """Stop the server gracefully; exit 0 once it acknowledged and closed the connection."""
    with _admin_client(args) as client:
        client.shutdown()
    if _isatty(sys.stdout):
        print(f"{args.host}: shutting down")
    return EXIT_OK


def cmd_refuse(args: argparse.Namespace) -> int:
    """REFUSE: print the final id (fsynced) once the server takes no more writes."""
    with _admin_client(args) as client:
        final = client.refuse(args.new_primary or "")
    print(final)
    return EXIT_OK


def cmd_accept(args: argparse.Namespace) -> int:
    """ACCEPT: print the epoch and the id it begins at (or that it was already primary)."""
    with _admin_client(args) as client:
        epoch, first, changed = client.accept()
    print(f"{'' if changed else 'already primary '}epoch={epoch} first={first}")
    return EXIT_OK


def cmd_failover(args: argparse.Namespace) -> int:
    """A planned failover from --from to --to (failover.py), or --abort; each step printed."""
    from . import failover

    if not args.from_:
        raise UsageError("--from HOST:PORT is required")
    if not args.abort and not args.to:
        raise UsageError("--to HOST:PORT is required (or --abort)")
    def dial(address: str) -> Client:
        return _admin_client(args, address)

    try:
        if args.abort:
            failover.abort(args.from_, args.to, dial, say=_say)
        else:
            failover.run(args.from_, args.to, args.failover_timeout, dial, say=_say)
    except failover.FailoverError as exc:
        _say(f"FAILED: {exc.what}")
        _say(f"state: {exc.state}")
        _say(f"next: {exc.next}")
        print(f"logd failover: {exc.what} (exit {exc.exit_status})", file=sys.stderr)
        return exc.exit_status
    return EXIT_OK


def _say(line: str) -> None:
    print(line, flush=True)


# -- argparse -------------------------------------------------------------------------

EXIT_CODES_HELP = """\
exit codes:
  0  ok
  1  the server answered with an error, or a record failed its checksum/sequence check
  2  usage error
  3  connection failure (refused, lost, timed out, too many clients, server shutting down)
  4  not retained: the requested id was removed by retention
  130/143  stopped by SIGINT/SIGTERM (write flushes and reports first; read saves its cursor)
  141  read: the output closed early (EPIPE); the cursor file is put back
"""


def _positive_float(value: str) -> float:
    f = float(value)
    if f <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return f


def _size(value: str) -> int:
    try:
        n = parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def add_connection_options(parser: argparse.ArgumentParser, dest_prefix: str = "") -> None:
    """``-H`` and ``--timeout``; cli.py adds them before the subcommand with a ``global_`` prefix."""
    parser.add_argument(
        "-H",
        "--host",
        dest=f"{dest_prefix}host",
        metavar="ADDR",
        help=f"server as host:port, [v6]:port or a unix socket path (default: $LOGD_HOST, else {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--timeout",
        dest=f"{dest_prefix}timeout",
        type=_positive_float,
        metavar="S",
        help=f"seconds to wait for each reply (default: {DEFAULT_TIMEOUT:g})",
    )


def register(subparsers: Any) -> None:
    """Add write, read, head, stats and ping to an argparse subparsers object."""
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common)
    common.add_argument(
        "--wait",
        type=float,
        metavar="S",
        help="retry for up to S seconds while nothing listens at the address, with capped "
        "backoff (default: 0; for read -f --reconnect, no limit)",
    )

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str, desc: str, examples: str = "") -> Any:
        p = subparsers.add_parser(
            name,
            parents=[common],
            help=help,
            description=desc,
            epilog=(f"examples:\n{examples}\n\n" if examples else "") + EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=_command(func), client_command=name)
        return p

    p = add(
        "write",
        cmd_write,
        "append messages",
        "Append each MESSAGE, or with none, one message per line of stdin (empty lines are\n"
        "skipped; a trailing \\r is removed). stdin is sent as it arrives: a batch goes when\n"
        "it is full or its first line has waited --linger ms. Prints the ids written, one per\n"
        "line as the server acknowledges them (on a terminal, a summary once there are many),\n"
        "and for stdin a closing summary on stderr: lines read, written, the last id, and any\n"
        "batches in flight that may or may not have been written. SIGINT/SIGTERM send what was\n"
        "read, wait up to 5 s for the acks, and exit 130/143.",
        "  logd write 'first message' second\n"
        "  tail -F app.log | logd write -q\n"
        "  logd write --batch 1 < events.txt      # one MSG per line\n"
        "  logd write --batch-bytes 4MiB < big.log",
    )
    p.add_argument("messages", nargs="*", metavar="MESSAGE")
    p.add_argument("-q", "--quiet", action="store_true", help="print no ids and, unless stopped early, no summary")
    p.add_argument(
        "--batch", type=int, default=1000, metavar="N", help="most messages per MSG request (default: %(default)s)"
    )
    p.add_argument(
        "--batch-bytes",
        type=_size,
        default=1024 * 1024,
        metavar="SIZE",
        help="most bytes per MSG request, e.g. 65536, 512KiB, 1MiB (default: 1MiB)",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=DEFAULT_LINGER_MS,
        metavar="MS",
        help="send a batch once its first line has waited this long, 0 = as soon as stdin has "
        "nothing more ready (default: %(default)g)",
    )

    p = add(
        "read",
        cmd_read,
        "print records",
        "Print records from --from up to the head at start (or -n of them); -f keeps\n"
        "following, starting at the last 10 unless --from says otherwise. Output is\n"
        "'id<TAB>body' on a terminal (control characters and \\ escaped) and JSON lines\n"
        'otherwise ({"id": N, "body": "..."}, or "body_base64" for bodies that are not UTF-8).\n'
        'A body that is a msgpack map (logd.ship) also shows its fields: key=value, or "fields" in JSON.\n'
        "\n"
        "--cursor-file: with stdout, the cursor moves to records the pipe accepted, which is\n"
        "not proof the consumer processed them; if the reader closes early (EPIPE) the cursor\n"
        "is put back where this run found it and logd exits 141. With --exec CMD, logd runs\n"
        "the consumer itself and moves the cursor only when CMD read all and exited 0.",
        "  logd read --from -20                       # the last 20\n"
        "  logd read -f -o raw | grep ERROR           # tail -f\n"
        "  logd read -f --reconnect --wait 60         # also wait for the server to come up\n"
        "  logd read --cursor-file app.cursor --exec './import'",
    )
    p.add_argument(
        "--from",
        dest="from_",
        metavar="WHERE",
        help="an id, begin (the first retained id), end (only new records) or -N (the last N); "
        "default: begin, or -10 with -f",
    )
    p.add_argument("-n", type=int, metavar="N", help="stop after N records (default: no limit)")
    p.add_argument("-f", "--follow", action="store_true", help="keep reading new records")
    p.add_argument(
        "--reconnect",
        action="store_true",
        help="with -f: wait for the server (see --wait) and reconnect after a lost connection "
        "or restart, resuming after the last id",
    )
    p.add_argument(
        "--cursor-file",
        metavar="FILE",
        help="start after the id saved in FILE (overrides --from) and save the last id the "
        "consumer took (see above)",
    )
    p.add_argument(
        "--exec",
        dest="exec_",
        metavar="CMD",
        help="run CMD (with /bin/sh -c) and write the records to its stdin instead of stdout: once "
        "for the whole read, or with -f once per batch up to the head; the cursor moves only "
        "when CMD exits 0. Output defaults to json",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("raw", "json", "text"),
        help="raw: bodies only; json: JSON lines; text: id<TAB>body "
        "(default: text on a terminal, else json)",
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
        "closed the connection. An admin command: accepted from --admin-from\n"
        "(default 127.0.0.1, ::1) and the unix socket, or anywhere after AUTH with\n"
        "the admin token, which this command sends first when $LOGD_ADMIN_TOKEN is set.",
    )
    refuse = add(
        "refuse",
        cmd_refuse,
        "stop the server taking writes (failover)",
        "Send REFUSE: the server answers every MSG from now on with ERR_CLIENT REFUSED\n"
        "(naming --new-primary when given), fsyncs what it has, persists the role, and\n"
        "replies with the final id, which this prints. Followers keep streaming up to it.\n"
        "Idempotent. An admin command (see shutdown; $LOGD_ADMIN_TOKEN).",
    )
    refuse.add_argument("--new-primary", metavar="HOST:PORT",
                        help="the server that takes writes instead, named in refusals")
    add(
        "accept",
        cmd_accept,
        "make the server a primary (failover)",
        "Send ACCEPT: a refusing primary, or a read replica whose follower has been\n"
        "stopped, takes writes in a new epoch; prints 'epoch=N first=ID' (or 'already\n"
        "primary epoch=N first=ID'). An admin command (see shutdown; $LOGD_ADMIN_TOKEN).",
    )
    failover = subparsers.add_parser(
        "failover",
        help="move the primary from one server to another (planned failover)",
        description="Planned failover: REFUSE A (naming B); wait until B's follower has A's final\n"
        "id fsynced; wait until that follower stops (started with --advertise B, it exits\n"
        "when A names B), retrying ACCEPT on B while it holds the directory; ACCEPT B; print\n"
        "the new primary, its epoch and both heads. Every step is printed as it happens. On\n"
        "a failure it stops, says what state it left (A refusing is safe) and what to run\n"
        "next. --abort --from A [--to B] gives A its writes back (ACCEPT on A: a new epoch),\n"
        "refusing if B was promoted. Admin commands: $LOGD_ADMIN_TOKEN is sent when set.",
        epilog="examples:\n  logd failover --from 10.0.0.1:1774 --to 10.0.0.2:1774\n"
        "  logd failover --abort --from 10.0.0.1:1774 --to 10.0.0.2:1774\n\n"
        "exit codes:\n  0  done (or aborted)\n  2  usage error\n"
        "  10 A or B cannot be reached (before REFUSE: nothing changed)\n"
        "  11 A is not a primary, or B not a read replica following A (nothing changed)\n"
        "  12 REFUSE on A failed\n"
        "  13 B did not have A's final id fsynced within --timeout (A left refusing)\n"
        "  14 B's follower did not release the directory within --timeout (A left refusing)\n"
        "  15 ACCEPT on B (or, with --abort, on A) failed otherwise\n"
        "  16 --abort refused: B was promoted, or could not be asked\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    failover.add_argument("--from", dest="from_", metavar="HOST:PORT", help="the primary now (A)")
    failover.add_argument("--to", metavar="HOST:PORT",
                          help="the read replica to promote (B): logd serve --refuse over the "
                          "directory of a logd-follower started with --advertise B")
    failover.add_argument("--timeout", dest="failover_timeout", type=_positive_float,
                          default=30.0, metavar="S",
                          help="give up this long after REFUSE, leaving A refusing "
                          "(default: %(default)g)")
    failover.add_argument("--reply-timeout", dest="timeout", type=_positive_float, metavar="S",
                          help=f"seconds to wait for each reply (default: {DEFAULT_TIMEOUT:g})")
    failover.add_argument("--abort", action="store_true",
                          help="give A its writes back (ACCEPT on A), unless B was promoted")
    failover.set_defaults(func=_command(cmd_failover), client_command="failover")


def main(argv: list[str] | None = None) -> int:
    """Run the client subcommands alone (``python -m logd.clientcli``), for tests and debugging."""
    parser = argparse.ArgumentParser(prog="logd", epilog=EXIT_CODES_HELP)
    add_connection_options(parser, "global_")
    sub = parser.add_subparsers(dest="subcommand", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
