"""The follower's Prometheus metrics (``logd-follower --metrics HOST:PORT``).

Served like the server's (``logd.metrics.MetricsServer``: gevent's WSGI
server, since the follower is a gevent process too), from a collector that
reads the follower's own state at scrape time (``Follower.metrics_snapshot``).
docs/metrics.rst names each metric.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from logd.log.status import LINKS

__all__ = ["FollowerCollector", "follower_families", "COPIED_BYTES", "COPIED_IDS", "RECONNECTS"]

COPIED_BYTES = "copied_bytes"
COPIED_IDS = "copied_ids"
RECONNECTS = "reconnects"


def follower_families(s: Mapping[str, Any]) -> list[Metric]:
    """Metrics from a follower snapshot: state, primary_head, written and
    fsynced positions (partition, offset, id) and the counters above."""
    state = str(s["state"]).replace(" ", "_")
    states = GaugeMetricFamily("logd_follower_state", "1 for the link's state, 0 for the others",
                               labels=["state"])
    for name in (*LINKS, *([state] if state not in LINKS else [])):
        states.add_metric([name], 1 if name == state else 0)
    written, fsynced, head = s["written"][2], s["fsynced"][2], s["primary_head"]
    return [
        states,
        GaugeMetricFamily("logd_follower_lag_ids", "Ids the primary has (its head as last seen) "
                          "that this copy has not written", value=max(0, head - written)),
        GaugeMetricFamily("logd_follower_primary_head_id", "The primary's head as last seen "
                          "(its hello and heartbeats)", value=head),
        GaugeMetricFamily("logd_follower_written_id", "Last id written to the copy", value=written),
        GaugeMetricFamily("logd_follower_fsynced_id", "Last id of the copy known fsynced", value=fsynced),
        CounterMetricFamily("logd_follower_copied_bytes", "Record bytes copied from the primary "
                            "by this process", value=s[COPIED_BYTES]),
        CounterMetricFamily("logd_follower_copied_ids", "Records copied from the primary by this "
                            "process", value=s[COPIED_IDS]),
        CounterMetricFamily("logd_follower_reconnects", "Sessions with the primary that ended "
                            "and were retried", value=s[RECONNECTS]),
    ]


class FollowerCollector(Collector):
    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from follower_families(self._snapshot())
