"""Prometheus metrics (``--metrics HOST:PORT``; docs/metrics.rst names each one).

One registry per process (never prometheus_client's global one), holding:

- a collector that reads the STATS counters at scrape time (``server_families``:
  a pure function of the STATS dict and the followers, so a scrape and STATS
  cannot disagree and nothing is counted twice);
- the fsync latency histogram, the one thing STATS does not keep: the log
  calls ``observe`` after each fsync round (``FileLog(on_fsync=...)``);
- prometheus_client's process collector (CPU, memory, descriptors, start time).

``MetricsServer`` serves the registry with prometheus_client's WSGI app (its
exposition format, content negotiation and gzip) on gevent's WSGI server, at
``/metrics`` only. The follower (follower/metrics.py) uses the same server
with its own collector.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import structlog
from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .events.handlers import FULL_COPIES, PARTIAL_RESUMES, FollowerState
from .server import tcp_listener
from . import stats as st

__all__ = ["MetricsServer", "ServerCollector", "server_families", "fsync_histogram", "ROLES",
           "FSYNC_BUCKETS", "PATH"]

log = structlog.get_logger("logd.metrics")

PATH = "/metrics"

# fdatasync on an SSD takes 0.1-2 ms, on a disk 5-30 ms; past a second is an incident.
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                 0.5, 1.0, 2.5, 5.0, 10.0)

ROLES = ("primary", "replica")

# STATS key -> (metric name, help). Counters: prometheus_client adds "_total".
COUNTERS: tuple[tuple[str, str, str], ...] = (
    (st.MESSAGES_WRITTEN, "logd_written_messages", "Messages (records) appended to the log"),
    (st.BYTES_WRITTEN, "logd_written_bytes", "Message body bytes appended to the log"),
    (st.CONNECTIONS_TOTAL, "logd_connections_accepted", "Connections accepted, rejected ones included"),
    (st.CONNECTIONS_REJECTED, "logd_connections_rejected", "Connections refused at --max-clients "
     "or for want of descriptors"),
    (st.SLOW_READERS_DROPPED, "logd_dropped_readers", "Readers dropped for taking no bytes "
     "for --send-timeout"),
    (st.PROTOCOL_ERRORS, "logd_protocol_errors", "Connections closed for a protocol error"),
    (st.TIMEOUTS, "logd_timeouts", "Connections closed by --idle-timeout or --partial-timeout"),
    (st.FSYNCS, "logd_fsyncs", "fsync rounds completed"),
    (st.FSYNC_ERRORS, "logd_fsync_errors", "fsync rounds failed (writes stop until restart)"),
    (st.WRITE_ERRORS, "logd_write_errors", "MSGs that failed to write"),
    (st.ACCEPT_FD_ERRORS, "logd_accept_fd_errors", "accept() failures for want of descriptors"),
    (FULL_COPIES, "logd_replication_full_copies", "REPLICATE sessions of followers with an empty copy"),
    (PARTIAL_RESUMES, "logd_replication_partial_resumes", "REPLICATE sessions of followers resuming "
     "their copy"),
)

# STATS key -> (metric name, help), for values that go up and down.
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("head", "logd_head_id", "Id of the last message written (0: none)"),
    ("synced_head", "logd_synced_head_id", "Id of the last message known fsynced"),
    ("first_id", "logd_first_id", "Id of the oldest retained message"),
    ("connections", "logd_connections", "Connections open now"),
    ("tail_readers", "logd_tail_readers", "READs waiting at the head for new messages"),
    ("queue_depth", "logd_queue_depth", "Commands waiting for the event queue"),
    ("commit_waiters", "logd_commit_waiters", "Replies waiting for their ids to be committed"),
    ("followers", "logd_followers", "Followers connected with REPLICATE"),
    ("epoch", "logd_epoch", "The primary epoch this server knows (failover)"),
    # A read replica's view of its follower (watch.py).
    ("primary_head", "logd_replica_primary_head_id", "Read replica: the primary's head as the "
     "follower last saw it (-1: unknown)"),
    ("lag_ids", "logd_replica_lag_ids", "Read replica: ids the primary has and this replica "
     "does not show yet (-1: unknown)"),
    ("follower_status_age_seconds", "logd_replica_follower_status_age_seconds",
     "Read replica: age of the follower's status file (-1: none)"),
)


def fsync_histogram(registry: CollectorRegistry, prefix: str = "logd") -> Histogram:
    return Histogram(f"{prefix}_fsync_duration_seconds", "Duration of each fsync round (the "
                     "partitions' fdatasync and the directory's fsync)", buckets=FSYNC_BUCKETS,
                     registry=registry)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _follower_labels(followers: Sequence[FollowerState]) -> list[str]:
    """One label value per follower: its name, or its address; a name two share gets the address."""
    names = [f.name or f.addr for f in followers]
    return [n if names.count(n) == 1 else f"{n}@{f.addr}" for n, f in zip(names, followers)]


def server_families(data: Mapping[str, Any], followers: Sequence[FollowerState] = ()) -> list[Metric]:
    """The server's metrics from a STATS dict (``Handlers.collect_stats``) and its followers."""
    out: list[Metric] = []
    for key, name, help_ in COUNTERS:
        value = _number(data.get(key))
        if value is not None:
            out.append(CounterMetricFamily(name, help_, value=value))
    for key, name, help_ in GAUGES:
        value = _number(data.get(key))
        if value is not None:
            out.append(GaugeMetricFamily(name, help_, value=value))
    commands = CounterMetricFamily("logd_commands", "Commands run, by command", labels=["command"])
    errors = CounterMetricFamily("logd_command_errors", "Commands answered with an error, by command",
                                 labels=["command"])
    for key, value in sorted(data.items()):
        if not key.startswith("cmd_") or _number(value) is None:
            continue
        command = key[4:]
        if command.endswith("_errors"):
            errors.add_metric([command[:-7]], value)
        else:
            commands.add_metric([command], value)
    out += [commands, errors]
    role = data.get("role")
    if isinstance(role, str):
        roles = GaugeMetricFamily("logd_role", "1 for this server's role, 0 for the others",
                                  labels=["role"])
        for r in (*ROLES, *([role] if role not in ROLES else [])):
            roles.add_metric([r], 1 if r == role else 0)
        out.append(roles)
    if "link" in data:  # a read replica
        link = GaugeMetricFamily("logd_replica_link", "Read replica: 1 for the follower's link "
                                 "state, as its status file says", labels=["state"])
        link.add_metric([str(data["link"])], 1)
        out.append(link)
    out.append(InfoMetricFamily("logd", "This server's version and fsync policy",
                                value={"version": str(data.get("version", "")),
                                       "fsync_policy": str(data.get("fsync_policy", ""))}))
    out += _follower_families(int(data.get("head", 0)), followers)
    return out


def _follower_families(head: int, followers: Sequence[FollowerState]) -> list[Metric]:
    lag = GaugeMetricFamily("logd_replication_lag_ids", "Ids this primary has that the follower has "
                            "not written yet", labels=["follower"])
    written = GaugeMetricFamily("logd_replication_written_id", "Last id the follower reported written",
                                labels=["follower"])
    synced = GaugeMetricFamily("logd_replication_synced_id", "Last id the follower reported fsynced",
                               labels=["follower"])
    lag_seconds = GaugeMetricFamily("logd_replication_lag_seconds", "Age of the oldest committed message "
                                    "the follower lacks (0: none)", labels=["follower"])
    lag_bytes = GaugeMetricFamily("logd_replication_lag_bytes", "Committed bytes the follower has not "
                                  "written yet", labels=["follower"])
    for label, f in zip(_follower_labels(followers), followers):
        lag.add_metric([label], max(0, head - f.written[2]))
        written.add_metric([label], f.written[2])
        synced.add_metric([label], f.synced[2])
        if f.lag is not None:  # the same figures as its STATS line (events/lag.py)
            behind_bytes, behind_seconds = f.lag(f.written)
            lag_bytes.add_metric([label], behind_bytes)
            lag_seconds.add_metric([label], behind_seconds)
    out: list[Metric] = [lag, written, synced]
    if lag_seconds.samples:
        out += [lag_bytes, lag_seconds]
    return out


class ServerCollector(Collector):
    """Reads STATS at scrape time: ``stats()`` is ``Handlers.collect_stats``."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]],
                 followers: Callable[[], Iterable[FollowerState]]) -> None:
        self._stats = stats
        self._followers = followers

    def collect(self) -> Iterator[Metric]:
        followers = list(self._followers())
        yield from server_families(self._stats(), followers)


class _ErrorLog:
    """gevent's WSGI server reports bad requests here: as our log lines, not raw stderr."""

    def write(self, text: str) -> None:
        if text.strip():
            log.warning("metrics_http_error", error=text.strip())

    def writelines(self, lines: Iterable[str]) -> None:
        self.write("".join(lines))

    def flush(self) -> None:
        pass


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MetricsServer:
    """``/metrics`` of ``registry`` on gevent's WSGI server; 404 elsewhere."""

    def __init__(self, address: tuple[str, int], prefix: str = "logd") -> None:
        """Bind now, so a bad address or a taken port fails the start.

        Raises:
            OSError: with a one-line message naming the address.
        """
        host, port = address
        try:
            self.sock = tcp_listener(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"metrics address {_where(host, port)} is already in use") from exc
            raise OSError(f"cannot serve metrics on {_where(host, port)}: {exc.strerror or exc}") from exc
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.fsync_seconds = fsync_histogram(self.registry, prefix)
        self._server: WSGIServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def serve(self, collector: Collector) -> None:
        """Start serving, ``collector`` read at each scrape."""
        self.registry.register(collector)
        metrics = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != PATH:
                start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
                return [f"not found: metrics are at {PATH}\n".encode()]
            try:
                result: Iterable[bytes] = metrics(environ, start_response)
            except Exception:  # a bug in a collector: say so, keep serving
                log.exception("metrics_scrape_failed")
                start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"metrics collection failed; see the server log\n"]
            return result

        # log=None: no access log lines (the scrape interval would fill the journal).
        self._server = WSGIServer(self.sock, app, log=None, error_log=_ErrorLog())
        self._server.start()
        host, port = self.address
        log.info("metrics_listening", host=host, port=port, path=PATH)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1.0)
        else:
            self.sock.close()
