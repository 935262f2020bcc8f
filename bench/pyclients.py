"""W1py, W2py, W4py: W1, W2 and W4 driven by each system's own Python client.

The comparison a Python team makes: ``logd.connect`` against ``redis-py``
with ``hiredis`` (bench-only dependencies: ``pip install redis hiredis``).
Same sizes and bodies as W1, W2 and W4; the client code is the libraries',
so their parsers, checks and object construction are part of the figure.

- W1py: logd ``append_many`` of batches of 100 with a window of 8 MSGs in
  flight (W1's depth); redis-py ``pipeline(transaction=False)`` of 100
  ``XADD`` per ``execute()``. redis-py's ``execute()`` sends the pipeline and
  waits for all its replies, so only one batch is in flight at a time.
- W2py: logd ``append(body)``; redis-py ``xadd``; one request at a time.
- W4py: logd ``read(1, n)`` (every record's CRC and id checked by the
  client); redis-py ``xrange`` pages of 1,000 (``(<last id>`` to ``+``).
"""

from __future__ import annotations

import time

from workloads import BODY, IO_TIMEOUT, BenchTimeout, figures, percentiles
from wire import PAGE, STREAM, ReplyError

WORKLOADS = ["W1py", "W2py", "W4py"]
NOT_INSTALLED = "not installed: pip install redis hiredis"
FIELDS = {b"d": BODY}

perf = time.perf_counter


def redis_py_missing() -> str | None:
    """Why the redis-py workloads cannot run (None: redis-py with hiredis is there)."""
    try:
        import hiredis  # noqa: F401
        import redis  # noqa: F401
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:
        return NOT_INSTALLED
    if not HIREDIS_AVAILABLE:  # installed, but redis-py would parse in pure Python
        return NOT_INSTALLED + " (redis-py does not see hiredis)"
    return None


def client_impl(system: str) -> str:
    """Which parser the library runs: logd's native fast path or pure Python; redis-py's hiredis."""
    if system == "logd":
        from logd import speedups

        return f"logd.client ({speedups.IMPLEMENTATION})"
    import hiredis
    import redis

    return f"redis-py {redis.__version__} + hiredis {hiredis.__version__}"


def _figures(system: str, msgs: int, requests: int, wall: float, cpu: float) -> dict:
    return dict(figures(msgs, requests, wall, cpu), client_impl=client_impl(system))


def _redis(port: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=IO_TIMEOUT, socket_connect_timeout=IO_TIMEOUT)


def _logd(port: int):
    import logd

    return logd.connect(f"127.0.0.1:{port}", timeout=IO_TIMEOUT, connect_timeout=IO_TIMEOUT)


def write(port: int, system: str, n_requests: int, per_request: int, window: int,
          latencies: list | None, timeout: float) -> dict:
    """W1py (``latencies`` None: pipelined) or W2py (one request at a time, round trips in ``latencies``)."""
    if system == "redis" and (why := redis_py_missing()):
        return {"not_installed": why}
    bodies = [BODY] * per_request
    written = 0
    deadline = perf() + timeout
    cpu0 = time.process_time()
    t0 = perf()
    if system == "logd":
        with _logd(port) as c:
            if latencies is None:
                for ids in c.append_stream((bodies for _ in range(n_requests)), window=window):
                    written += len(ids)
                    if perf() > deadline:
                        raise BenchTimeout(f"W1py not done after {timeout}s")
            else:
                for _ in range(n_requests):
                    t = perf()
                    written += len(c.append(*bodies))
                    latencies.append(perf() - t)
                    if t > deadline:
                        raise BenchTimeout(f"W2py not done after {timeout}s")
    else:
        r = _redis(port)
        try:
            if latencies is None:
                pipe = r.pipeline(transaction=False)
                for _ in range(n_requests):
                    for b in bodies:
                        pipe.xadd(STREAM, {b"d": b})
                    written += len(pipe.execute())
                    if perf() > deadline:
                        raise BenchTimeout(f"W1py not done after {timeout}s")
            else:
                for _ in range(n_requests):
                    t = perf()
                    r.xadd(STREAM, FIELDS)
                    latencies.append(perf() - t)
                    written += 1
                    if t > deadline:
                        raise BenchTimeout(f"W2py not done after {timeout}s")
        finally:
            r.close()
    wall = perf() - t0
    cpu = time.process_time() - cpu0
    if written != n_requests * per_request:
        raise ReplyError(f"wrote {written} messages, expected {n_requests * per_request}")
    out = _figures(system, written, n_requests, wall, cpu)
    if latencies is not None:
        out.update(percentiles(latencies))
    return out


def read(port: int, system: str, count: int, timeout: float) -> dict:
    """W4py: read ``count`` messages from the first with the library."""
    if system == "redis" and (why := redis_py_missing()):
        return {"not_installed": why}
    total = requests = 0
    deadline = perf() + timeout
    cpu0 = time.process_time()
    t0 = perf()
    if system == "logd":
        with _logd(port) as c:
            requests = 1
            last = 0
            for rec in c.read(1, count):  # the client checks each CRC and that ids are consecutive
                last = rec.id
                total += 1
                if not total & 0xFFFF and perf() > deadline:
                    raise BenchTimeout(f"W4py not done after {timeout}s ({total}/{count})")
            if last != count:
                raise ReplyError(f"last id {last}, expected {count}")
    else:
        r = _redis(port)
        try:
            start: bytes = b"-"
            while total < count:
                page = r.xrange(STREAM, min=start, max=b"+", count=min(PAGE, count - total))
                requests += 1
                if not page:
                    break
                total += len(page)
                start = b"(" + page[-1][0]
                if perf() > deadline:
                    raise BenchTimeout(f"W4py not done after {timeout}s ({total}/{count})")
        finally:
            r.close()
    wall = perf() - t0
    cpu = time.process_time() - cpu0
    if total != count:
        raise ReplyError(f"read {total} messages, expected {count}")
    return _figures(system, total, requests, wall, cpu)
