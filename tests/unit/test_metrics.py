"""The metrics collectors as pure functions of a STATS dict (logd/metrics.py) and
of a follower snapshot (follower/metrics.py), through prometheus_client's own
exposition and parser: what a scrape would show."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from follower.metrics import FollowerCollector
from logd.config import ConfigError, ServerConfig, parse_host_port
from logd.events.handlers import FollowerState
from logd.metrics import ServerCollector

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

STATS: dict[str, Any] = {
    "head": 120, "first_id": 1, "synced_head": 100, "fsync_policy": "always", "uptime_seconds": 9.5,
    "connections": 3, "tail_readers": 2, "connections_total": 40, "connections_rejected": 1,
    "protocol_errors": 4, "timeouts": 5, "slow_readers_dropped": 6, "messages_written": 120,
    "bytes_written": 4567, "fsyncs": 30, "fsync_errors": 0, "write_errors": 7, "accept_fd_errors": 0,
    "cmd_msg": 12, "cmd_read": 3, "cmd_read_errors": 1, "cmd_stats": 2, "cmd_head_errors": 8,
    "queue_depth": 0, "commit_waiters": 1, "version": "9.9", "pid": 1, "data_dir": "/d", "listen": "x",
    "role": "primary", "replication_full_copies": 2, "replication_partial_resumes": 3, "followers": 2,
    "write_error": "", "failed": "",
}


def scrape(collector: Any) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_server_counters_and_gauges_are_the_stats_values() -> None:
    got = scrape(ServerCollector(lambda: STATS, lambda: []))
    expect = {
        "logd_written_messages_total": 120, "logd_written_bytes_total": 4567,
        "logd_connections_accepted_total": 40, "logd_connections_rejected_total": 1,
        "logd_dropped_readers_total": 6, "logd_protocol_errors_total": 4, "logd_timeouts_total": 5,
        "logd_fsyncs_total": 30, "logd_fsync_errors_total": 0, "logd_write_errors_total": 7,
        "logd_replication_full_copies_total": 2, "logd_replication_partial_resumes_total": 3,
        "logd_head_id": 120, "logd_synced_head_id": 100, "logd_first_id": 1, "logd_connections": 3,
        "logd_tail_readers": 2, "logd_commit_waiters": 1, "logd_followers": 2,
    }
    for name, value in expect.items():
        assert got[(name, ())] == value, name


def test_commands_and_errors_are_labelled_by_command() -> None:
    got = scrape(ServerCollector(lambda: STATS, lambda: []))
    commands = {dict(k[1])["command"]: v for k, v in got.items() if k[0] == "logd_commands_total"}
    errors = {dict(k[1])["command"]: v for k, v in got.items() if k[0] == "logd_command_errors_total"}
    assert commands == {"msg": 12, "read": 3, "stats": 2}
    assert errors == {"read": 1, "head": 8}


def test_role_is_a_labelled_gauge_and_epoch_appears_when_stats_has_it() -> None:
    got = scrape(ServerCollector(lambda: STATS, lambda: []))
    assert got[("logd_role", (("role", "primary"),))] == 1
    assert got[("logd_role", (("role", "replica"),))] == 0
    assert not any(k[0] == "logd_epoch" for k in got)
    got = scrape(ServerCollector(lambda: {**STATS, "role": "replica", "epoch": 4}, lambda: []))
    assert got[("logd_role", (("role", "replica"),))] == 1
    assert got[("logd_role", (("role", "primary"),))] == 0
    assert got[("logd_epoch", ())] == 4
    assert got[("logd_info", (("fsync_policy", "always"), ("version", "9.9")))] == 1


def test_followers_lag_per_follower_label() -> None:
    followers = [FollowerState("127.0.0.1:5000", "east", written=(1, 10, 100), synced=(1, 5, 90)),
                 FollowerState("127.0.0.1:5001", "", written=(1, 20, 120), synced=(1, 20, 120)),
                 FollowerState("10.0.0.1:7", "twin", written=(1, 0, 7)),
                 FollowerState("10.0.0.2:7", "twin", written=(1, 0, 9))]
    got = scrape(ServerCollector(lambda: STATS, lambda: followers))
    lag = {dict(k[1])["follower"]: v for k, v in got.items() if k[0] == "logd_replication_lag_ids"}
    assert lag == {"east": 20, "127.0.0.1:5001": 0, "twin@10.0.0.1:7": 113, "twin@10.0.0.2:7": 111}
    assert got[("logd_replication_written_id", (("follower", "east"),))] == 100
    assert got[("logd_replication_synced_id", (("follower", "east"),))] == 90
    assert not any(k[0] == "logd_replication_lag_seconds" for k in got)  # no lag source: not exported
    behind = FollowerState("127.0.0.1:5002", "west", written=(1, 30, 50), lag=lambda written: (4096, 2.5))
    got = scrape(ServerCollector(lambda: STATS, lambda: [behind]))
    assert got[("logd_replication_lag_bytes", (("follower", "west"),))] == 4096
    assert got[("logd_replication_lag_seconds", (("follower", "west"),))] == 2.5


def test_read_replica_view() -> None:
    replica = {**STATS, "role": "replica", "link": "streaming", "lag_ids": 3, "primary_head": 123,
               "follower_status_age_seconds": 0.4}
    got = scrape(ServerCollector(lambda: replica, lambda: []))
    assert got[("logd_replica_lag_ids", ())] == 3
    assert got[("logd_replica_primary_head_id", ())] == 123
    assert got[("logd_replica_link", (("state", "streaming"),))] == 1


def test_missing_or_non_numeric_values_are_left_out() -> None:
    got = scrape(ServerCollector(lambda: {"head": 5, "messages_written": "n/a", "cmd_ping": None}, lambda: []))
    assert got[("logd_head_id", ())] == 5
    assert not any(k[0] in ("logd_written_messages_total", "logd_commands_total") for k in got)


def test_follower_collector() -> None:
    snap = {"state": "catching up", "primary_head": 500, "written": (3, 100, 420), "fsynced": (3, 90, 410),
            "copied_bytes": 9000, "copied_ids": 420, "reconnects": 2}
    got = scrape(FollowerCollector(lambda: snap))
    assert got[("logd_follower_state", (("state", "catching_up"),))] == 1
    assert sum(v for k, v in got.items() if k[0] == "logd_follower_state") == 1
    assert got[("logd_follower_state", (("state", "streaming"),))] == 0
    assert got[("logd_follower_lag_ids", ())] == 80
    assert got[("logd_follower_primary_head_id", ())] == 500
    assert got[("logd_follower_written_id", ())] == 420
    assert got[("logd_follower_fsynced_id", ())] == 410
    assert got[("logd_follower_copied_bytes_total", ())] == 9000
    assert got[("logd_follower_copied_ids_total", ())] == 420
    assert got[("logd_follower_reconnects_total", ())] == 2
    # A copy ahead of the primary head it last saw (a stale heartbeat) is no negative lag.
    assert scrape(FollowerCollector(lambda: {**snap, "primary_head": 400}))[("logd_follower_lag_ids", ())] == 0


@pytest.mark.parametrize("text, expect", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), ("localhost:0", ("localhost", 0)),
    ("[::1]:9464", ("::1", 9464)), (" 0.0.0.0:65535 ", ("0.0.0.0", 65535)), ("off", None),
])
def test_parse_host_port(text: str, expect: tuple[str, int] | None) -> None:
    assert parse_host_port(text) == expect


@pytest.mark.parametrize("text", ["9464", ":9464", "host:", "host:65536", "::1:9464", "host:port",
                                  "a b:1", "", 9464])
def test_parse_host_port_refuses(text: Any) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_host_port(text)


def test_metrics_setting_in_the_table() -> None:
    assert ServerConfig().metrics is None
    assert ServerConfig().with_overrides({"metrics": "127.0.0.1:9464"}, "f.toml").metrics == ("127.0.0.1", 9464)
    with pytest.raises(ConfigError, match=r"^f.toml: metrics: must be HOST:PORT"):
        ServerConfig().with_overrides({"metrics": "nowhere"}, "f.toml")
    on = ServerConfig().with_overrides({"metrics": "127.0.0.1:9464"}, "f.toml")
    assert on.with_overrides({"metrics": "off"}).metrics is None  # the flag turns the file's off


def test_every_metric_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "metrics.rst").read_text()
    followers = [FollowerState("a:1", "n", written=(1, 1, 1))]
    replica = {**STATS, "link": "streaming", "lag_ids": 0, "primary_head": 1,
               "follower_status_age_seconds": 0.1, "epoch": 1}
    snap = {"state": "streaming", "primary_head": 1, "written": (1, 1, 1), "fsynced": (1, 1, 1),
            "copied_bytes": 1, "copied_ids": 1, "reconnects": 0}
    names = {k[0] for k in scrape(ServerCollector(lambda: replica, lambda: followers))}
    names |= {k[0] for k in scrape(FollowerCollector(lambda: snap))}
    assert names and not sorted(n for n in names if f"``{n}``" not in doc)
