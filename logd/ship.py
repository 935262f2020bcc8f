"""Ship a program's structlog events to logd: one msgpack map per event, batched, never blocking.

``LogdShipper`` is a structlog processor. Called for each event, it packs
the event dict into a msgpack map (values msgpack cannot hold become
``str``), puts it in a bounded buffer and returns the dict unchanged, so the
program's own rendering goes on. A background sender (a thread; a greenlet
once gevent has patched ``threading``) takes batches from the buffer and
appends each as one ``MSG`` with several arguments. Strategy and limits:

- Never block the program. The buffer holds at most ``max_events`` events
  and ``max_bytes`` bytes; an event that does not fit is dropped and
  counted, and the count goes to logd in place, as one event
  ``{"event": "logd_ship_dropped", "level": "warning", "dropped": N, ...}``
  where the lost events would have been (``buffer_full``, ``too_big`` and
  ``rejected`` say why). Packing happens in the caller (a few microseconds;
  it also snapshots mutable values at log time); no I/O does.
- Batches go when ``batch`` events or ``batch_bytes`` are waiting, or when
  the oldest has waited ``linger`` seconds (as ``logd write --batch
  --linger``). One MSG is in flight at a time: a log shipper's batches are
  big when it is busy, and it keeps the retry rule simple.
- At least once. A batch whose connection fails is sent again after a
  backoff (``logd.backoff``, base 0.05 s, cap 2 s) once the server is back,
  so a batch whose acknowledgement was lost may appear twice (counted in
  ``stats["resent"]``). Error replies after which nothing was written
  (``Refused``, ``ShuttingDown``, server errors) are retried the same way; a
  batch the server rejects as malformed is dropped and reported.
- Exit: ``close(timeout)`` (also registered with ``atexit``) sends what is
  buffered, waiting at most ``timeout`` seconds; with the server down the
  program still exits on time, and the sender, a daemon, dies with it.
- The shipper never logs through structlog (it would feed itself);
  ``stats`` and ``last_error`` say how it is doing.

The pure parts (``pack_event``, ``ShipBuffer``) take no locks, sockets or
clocks, and are unit-tested alone.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, MutableMapping

import msgpack

from . import backoff, errors
from .client import Client

__all__ = [
    "DROPPED_EVENT",
    "LogdShipper",
    "ShipBuffer",
    "pack_event",
    "to_msgpack",
]

DROPPED_EVENT = "logd_ship_dropped"
# Below the server's default --max-message (1 MiB): a bigger event would be rejected.
MAX_EVENT = 1024 * 1024 - 1024
# Backoff (base, cap) between attempts to reach the server again.
SHIP_BACKOFF = (0.05, 2.0)
_MAX_DEPTH = 32
_INT_RANGE = (-(2**63), 2**64 - 1)
_PLAIN = frozenset({str, float, bool, type(None), bytes})  # exact types msgpack packs as they are


def to_msgpack(value: Any, depth: int = 0) -> Any:
    """``value`` with everything msgpack cannot encode turned into ``str`` (recursively):
    objects, sets, ints beyond 64 bits, non-str dict keys, nesting deeper than 32."""
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return value
    if isinstance(value, int):
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, (list, tuple)):
            return [to_msgpack(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {
                (k if isinstance(k, str) else _str(k)): to_msgpack(v, depth + 1) for k, v in value.items()
            }
    return _str(value)


def _str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the event
        return f"<unprintable {type(value).__name__}>"


def pack_event(event_dict: MutableMapping[str, Any]) -> bytes:
    """The msgpack map body for one event; see ``to_msgpack`` for what is converted."""
    # Converted first, not through packb(default=): the C packer takes tuple
    # and int keys, huge ints raise, and a cycle would hit its depth limit.
    # Plain values skip the conversion: it runs in the program's thread.
    out = {}
    for k, v in event_dict.items():
        out[k if type(k) is str else _str(k)] = v if type(v) in _PLAIN else to_msgpack(v, 1)
    return msgpack.packb(out, use_bin_type=True)  # type: ignore[no-any-return]


class _Dropped:
    """A place in the buffer where events were lost, and why."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    def body(self) -> bytes:
        return msgpack.packb(  # type: ignore[no-any-return]
            {"event": DROPPED_EVENT, "level": "warning", "dropped": sum(self.counts.values()), **self.counts}
        )


class ShipBuffer:
    """Bounded FIFO of packed events and drop markers. Not thread-safe: callers lock.

    ``put`` never blocks: an event that does not fit is counted in a drop
    marker at the end of the buffer (one marker per run of drops, so at most
    one per event kept, plus one). ``take`` turns markers into their events.
    """

    def __init__(self, max_events: int = 10_000, max_bytes: int = 16 * 1024 * 1024,
                 max_event: int = MAX_EVENT) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_event = max_event
        self._items: deque[bytes | _Dropped] = deque()
        self.events = 0  # events buffered (markers not counted)
        self.bytes = 0
        self.dropped = 0  # every event ever dropped

    def __len__(self) -> int:
        return len(self._items)

    def put(self, body: bytes) -> bool:
        """Buffer one packed event; False if it was dropped (and counted)."""
        if len(body) > self.max_event:
            self.drop("too_big")
            return False
        if self.events >= self.max_events or self.bytes + len(body) > self.max_bytes:
            self.drop("buffer_full")
            return False
        self._items.append(body)
        self.events += 1
        self.bytes += len(body)
        return True

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` events lost here (``reason``: buffer_full, too_big, rejected)."""
        last = self._items[-1] if self._items else None
        if not isinstance(last, _Dropped):
            last = _Dropped()
            self._items.append(last)
        last.add(reason, n)
        self.dropped += n

    def take(self, max_count: int, max_bytes: int) -> list[bytes]:
        """Up to ``max_count`` bodies and (about) ``max_bytes`` from the front; drop markers
        become their ``logd_ship_dropped`` event. A single big event goes alone."""
        batch: list[bytes] = []
        size = 0
        items = self._items
        while items and len(batch) < max_count:
            item = items[0]
            body = item.body() if isinstance(item, _Dropped) else item
            if batch and size + len(body) > max_bytes:
                break
            items.popleft()
            if not isinstance(item, _Dropped):
                self.events -= 1
                self.bytes -= len(body)
            batch.append(body)
            size += len(body)
        return batch

    def ready(self, max_count: int, max_bytes: int) -> bool:
        """A full batch is waiting."""
        return len(self._items) >= max_count or self.bytes >= max_bytes


class LogdShipper:
    """A structlog processor that ships each event to logd at ``address``; see the module docstring.

    Put it after the processors that add what you want shipped (timestamp,
    level, ``format_exc_info``) and before the renderer::

        shipper = LogdShipper("127.0.0.1:1774")
        structlog.configure(processors=[..., shipper, structlog.dev.ConsoleRenderer()])

    ``batch``/``batch_bytes``/``linger``: when a batch goes (see ``logd
    write``). ``max_events``/``max_bytes``: the buffer's bounds. ``timeout``:
    each wait for the server (connect, reply). ``exit_timeout``: how long
    the ``atexit`` flush waits. The sender starts with the first event.

    Raises:
        BadAddress: ``address`` cannot be parsed.
    """

    def __init__(
        self,
        address: str,
        *,
        batch: int = 1000,
        batch_bytes: int = 1024 * 1024,
        linger: float = 0.005,
        max_events: int = 10_000,
        max_bytes: int = 16 * 1024 * 1024,
        timeout: float = 5.0,
        exit_timeout: float = 2.0,
    ) -> None:
        if batch < 1 or batch_bytes < 1 or linger < 0:
            raise ValueError("batch and batch_bytes must be >= 1, linger >= 0")
        self.address = address
        self.batch = batch
        self.batch_bytes = batch_bytes
        self.linger = linger
        self.exit_timeout = exit_timeout
        self.timeout = timeout
        self._client = Client(address, timeout=timeout, connect_timeout=timeout)
        self._buffer = ShipBuffer(max_events, max_bytes, min(MAX_EVENT, batch_bytes))
        # threading is looked up here, not at import: gevent may have patched it since.
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)  # a batch was acknowledged or rejected
        self._wake = threading.Event()  # data for the sender, or close
        self._urge = threading.Event()  # flush or close: cut a backoff short
        self._oldest = 0.0  # when the oldest buffered event came
        self._in_flight = 0  # bodies taken but not acknowledged yet
        self._closing = False
        self._thread: threading.Thread | None = None
        self.last_error: BaseException | None = None
        self.stats = {"shipped": 0, "batches": 0, "resent": 0, "rejected": 0, "reconnects": 0,
                      "after_close": 0}
        atexit.register(self._at_exit)
        # A forked child (gunicorn's pre-fork workers) has no sender thread, must
        # not share the parent's socket, and must not send again what the parent
        # buffered: it starts afresh, empty, on its first event.
        os.register_at_fork(after_in_child=_in_child(weakref.ref(self)))

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._urge = threading.Event()
        self._thread = None
        self._in_flight = 0
        old = self._buffer
        self._buffer = ShipBuffer(old.max_events, old.max_bytes, old.max_event)
        # A new client, not drop(): its shutdown() would cut the parent's connection
        # too. The inherited socket is just closed, here, when it is collected.
        self._client = Client(self.address, timeout=self.timeout, connect_timeout=self.timeout)

    # -- the processor: runs in the program's threads, never blocks

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if isinstance(event_dict, MutableMapping):
            body = pack_event(event_dict)
        else:  # placed after a renderer: ship the rendered line
            body = pack_event({"event": to_msgpack(event_dict)})
        with self._lock:
            if self._closing:
                self.stats["after_close"] += 1
                return event_dict
            if not self._buffer:
                self._oldest = time.monotonic()
            kept = self._buffer.put(body)
            wake = len(self._buffer) == 1 or self._buffer.ready(self.batch, self.batch_bytes)
            if self._thread is None:
                self._start()
        if kept and wake:
            self._wake.set()
        return event_dict

    @property
    def dropped(self) -> int:
        """Events dropped so far (each is also reported to logd)."""
        return self._buffer.dropped

    # -- lifecycle

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything buffered so far is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._acked:
            if self._thread is None and self._buffer:
                self._start()
            while self._buffer or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._urge.set()  # no linger, no backoff: flush means now
                self._wake.set()
                self._acked.wait(left)
        self._urge.clear()
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is buffered, waiting at most ``timeout`` seconds, and stop the sender.
        Events logged afterwards are not shipped. True if everything was delivered."""
        delivered = self.flush(timeout)
        with self._lock:
            self._closing = True
        self._urge.set()
        self._wake.set()
        thread = self._thread
        if delivered and thread is not None and thread is not threading.current_thread():
            thread.join(0.5)  # it has nothing left to do
        self._client.close()
        atexit.unregister(self._at_exit)
        return delivered

    def _at_exit(self) -> None:
        self.close(self.exit_timeout)

    def _start(self) -> None:
        # A daemon: the interpreter joins non-daemon threads before atexit
        # runs, so a non-daemon sender would make exit wait for the server.
        self._thread = threading.Thread(target=self._run, name="logd-shipper", daemon=True)
        self._thread.start()

    # -- the sender

    def _run(self) -> None:
        pending: list[bytes] = []
        failures = 0
        client = self._client
        while True:
            if not pending:
                pending = self._next_batch()
                if not pending:
                    return  # closing, and nothing left
            sent = False
            try:
                client.connect(0)
                sent = True
                client.append(*pending)
            except (errors.ConnectionLost, errors.TooManyClients, errors.ShuttingDown,
                    errors.Refused, errors.ServerError) as exc:
                # Nothing written (an error reply), or unknown (a lost connection): again later.
                self.last_error = exc
                if sent and isinstance(exc, errors.ConnectionLost):
                    self.stats["resent"] += len(pending)  # it may have arrived
                if self._backoff(failures):
                    return
                failures += 1
                self.stats["reconnects"] += 1
                continue
            except errors.LogdError as exc:  # the batch itself is bad: retrying cannot help
                self.last_error = exc
                with self._acked:
                    self.stats["rejected"] += len(pending)
                    self._buffer.drop("rejected", len(pending))
                    self._finished()
                pending = []
                continue
            failures = 0
            with self._acked:
                self.stats["shipped"] += len(pending)
                self.stats["batches"] += 1
                self._finished()
            pending = []

    def _finished(self) -> None:
        self._in_flight = 0
        self._acked.notify_all()

    def _next_batch(self) -> list[bytes]:
        """Wait for a full batch, a lingered one, or close; take it. Empty: stop."""
        while True:
            with self._lock:
                wait: float | None = None
                if self._buffer:
                    waited = time.monotonic() - self._oldest
                    urged = self._closing or self._urge.is_set()
                    if urged or waited >= self.linger or self._buffer.ready(self.batch, self.batch_bytes):
                        batch = self._buffer.take(self.batch, self.batch_bytes)
                        self._in_flight = len(batch)
                        self._oldest = time.monotonic()
                        return batch
                    wait = self.linger - waited
                elif self._closing:
                    return []
                self._wake.clear()
            self._wake.wait(wait)

    def _backoff(self, failures: int) -> bool:
        """Wait before the next attempt; True if the shipper was closed (stop)."""
        self._urge.wait(backoff.delay(failures, *SHIP_BACKOFF))
        self._urge.clear()
        with self._lock:
            return self._closing


def _in_child(ref: weakref.ref[LogdShipper]) -> Callable[[], None]:
    def reset() -> None:
        shipper = ref()
        if shipper is not None:
            shipper._after_fork()

    return reset
