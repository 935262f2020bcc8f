"""``--metrics HOST:PORT`` on real processes: a scrape over a real socket,
parsed with prometheus_client's parser, agrees with STATS from the same
server; the fsync histogram counts fsync rounds; a follower's metrics and the
primary's per-follower lag; only /metrics is served; bad addresses fail the start."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .test_connections import stats, wait_for
from .test_replication import write_many
from .test_startup import serve_fails
from .wire import wire

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_url(proc, path: str = "/metrics") -> str:
    event = wait_for(lambda: proc.events("metrics_listening"), what="metrics_listening")[-1]
    assert event["host"] == "127.0.0.1" and event["port"] > 0
    return f"http://127.0.0.1:{event['port']}{path}"


def scrape(proc) -> Samples:
    with urllib.request.urlopen(metrics_url(proc), timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def by_label(got: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in got.items() if k[0] == name}


def test_scrape_agrees_with_stats(logd_server):
    srv = logd_server("--fsync", "never", "--metrics", "127.0.0.1:0")
    w = wire(srv)
    for i in range(5):
        w.cmd("MSG", b"m%d" % i, b"xx" * (i + 1))
        assert w.line().startswith(b"OK ")
    w.cmd("READ", 1, 3)
    w.read_until(b"EOF\r\n")
    w.cmd("READ", 999)  # past the head: an error reply, counted as a READ error
    assert w.line().startswith(b"ERR")
    w.cmd("HEAD")
    assert w.line() == b"OK 10\r\n"
    s = w.stats()  # STATS is counted once it has answered: the scrape sees one more
    got = scrape(srv)
    assert s["messages_written"] == 10 and s["bytes_written"] == sum(2 + 2 * (i + 1) for i in range(5))
    assert got[("logd_written_messages_total", ())] == s["messages_written"]
    assert got[("logd_written_bytes_total", ())] == s["bytes_written"]
    assert got[("logd_head_id", ())] == s["head"] == 10
    assert got[("logd_synced_head_id", ())] == s["synced_head"]
    assert got[("logd_connections", ())] == s["connections"] == 1
    assert got[("logd_connections_accepted_total", ())] == s["connections_total"]
    assert got[("logd_tail_readers", ())] == s["tail_readers"] == 0
    assert got[("logd_dropped_readers_total", ())] == s["slow_readers_dropped"]
    commands = by_label(got, "logd_commands_total", "command")
    assert commands == {"msg": 5, "read": 2, "head": 1, "stats": 1}
    assert {k: v for k, v in commands.items() if k != "stats"} == {
        k[4:]: v for k, v in s.items() if k.startswith("cmd_") and not k.endswith("_errors")}
    assert by_label(got, "logd_command_errors_total", "command") == {"read": 1} == {
        k[4:-7]: v for k, v in s.items() if k.startswith("cmd_") and k.endswith("_errors")}
    assert got[("logd_role", (("role", "primary"),))] == 1
    assert got[("logd_role", (("role", "replica"),))] == 0
    w.close()
    # Counters are read at scrape time: the closed connection shows at once.
    assert wait_for(lambda: scrape(srv)[("logd_connections", ())] == 0, what="connection closed")


def test_fsync_histogram_counts_fsync_rounds(logd_server):
    srv = logd_server("--fsync", "always", "--metrics", "127.0.0.1:0")
    before = scrape(srv)[("logd_fsync_duration_seconds_count", ())]
    w = wire(srv)
    for i in range(3):  # one at a time: each waits for its own fsync round
        w.cmd("MSG", b"durable %d" % i)
        assert w.line() == b"OK %d\r\n" % (i + 1)
    w.close()
    got = scrape(srv)
    count = got[("logd_fsync_duration_seconds_count", ())]
    assert count >= before + 3
    assert count == got[("logd_fsyncs_total", ())] == stats(srv)["fsyncs"]
    assert got[("logd_fsync_duration_seconds_bucket", (("le", "+Inf"),))] == count
    assert got[("logd_fsync_duration_seconds_sum", ())] > 0


def test_only_metrics_is_served(logd_server):
    srv = logd_server("--fsync", "never", "--metrics", "127.0.0.1:0")
    for path in ("/", "/metricsx", "/favicon.ico", "/metrics/"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(metrics_url(srv, path), timeout=10)
        assert info.value.code == 404, path
    assert scrape(srv)[("logd_head_id", ())] == 0  # and /metrics still answers


def test_follower_metrics_and_the_primarys_lag(logd_server, follower):
    srv = logd_server("--fsync", "never", "--partition-size", "4k", "--metrics", "127.0.0.1:0")
    write_many(srv, 200)
    f = follower(srv.addr, "--fsync", "always", "--name", "replica-a", "--metrics", "127.0.0.1:0")

    def caught_up() -> Samples | None:
        got = scrape(f)
        # fsynced follows written by one fsync: a scrape can fall between the two.
        return got if got[("logd_follower_written_id", ())] == 200 and \
            got[("logd_follower_fsynced_id", ())] == 200 and \
            got[("logd_follower_state", (("state", "streaming"),))] == 1 else None

    got = wait_for(caught_up, timeout=30, what="follower caught up")
    assert got[("logd_follower_lag_ids", ())] == 0
    assert got[("logd_follower_primary_head_id", ())] == 200
    assert got[("logd_follower_copied_ids_total", ())] == 200
    copied = sum(p.stat().st_size for p in f.data_dir.glob("*.log"))
    assert got[("logd_follower_copied_bytes_total", ())] == copied
    assert got[("logd_follower_reconnects_total", ())] == 0
    assert got[("logd_follower_fsync_duration_seconds_count", ())] >= 1
    assert sum(by_label(got, "logd_follower_state", "state").values()) == 1

    def primary_sees(written: int) -> Samples | None:
        got = scrape(srv)
        return got if got.get(("logd_replication_written_id", (("follower", "replica-a"),))) == written else None

    got = wait_for(lambda: primary_sees(200), what="the primary's view of the follower")
    assert got[("logd_replication_lag_ids", (("follower", "replica-a"),))] == 0
    assert got[("logd_followers", ())] == 1
    assert got[("logd_replication_full_copies_total", ())] == 1
    line = [v for k, v in stats(srv).items() if k.startswith("follower_")]
    assert len(line) == 1 and "lag_ids=0" in line[0] and "name=replica-a" in line[0]

    # The follower stopped, the primary moves on: its lag shows in the follower's last position.
    assert f.stop() == 0
    write_many(srv, 30, first=200)
    got = wait_for(lambda: scrape(srv)[("logd_followers", ())] == 0, what="follower gone")
    assert not any(k[0] == "logd_replication_lag_ids" for k in scrape(srv))


def test_bad_metrics_address_fails_the_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "logd", "serve", "--port", "0", "--data-dir",
                           str(tmp_path / "d"), "--metrics", "9464"], capture_output=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines() == [
        "logd serve: --metrics: must be HOST:PORT such as 127.0.0.1:9464 or [::1]:9464, or off, not '9464'"]
    toml = tmp_path / "logd.toml"
    toml.write_text('metrics = "localhost"\n')
    proc = subprocess.run([sys.executable, "-m", "logd", "serve", "--config", str(toml), "--port", "0",
                           "--data-dir", str(tmp_path / "d")], capture_output=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines() == [
        f"logd serve: {toml}: metrics: must be HOST:PORT such as 127.0.0.1:9464 or [::1]:9464, or off, "
        "not 'localhost'"]
    # An address this host does not have.
    code, events = serve_fails("--port", "0", "--data-dir", str(tmp_path / "d"), "--metrics", "192.0.2.1:9464")
    assert code == 1
    assert [e["error"] for e in events if e["event"] == "startup_failed"] == [
        "cannot serve metrics on 192.0.2.1:9464: Cannot assign requested address"]
    assert not (tmp_path / "d").exists()  # failed before the data dir was touched


def test_metrics_port_in_use_fails_the_start(tmp_path, follower):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        code, events = serve_fails("--port", "0", "--data-dir", str(tmp_path / "d"),
                                   "--metrics", f"127.0.0.1:{port}")
        assert code == 1
        assert [e["error"] for e in events if e["event"] == "startup_failed"] == [
            f"metrics address 127.0.0.1:{port} is already in use"]
        assert not any(e["event"] == "listening" for e in events)
        f = follower("127.0.0.1:1", "--metrics", f"127.0.0.1:{port}")
        assert f.wait_exit() == 1
        assert [e["error"] for e in f.events("startup_failed")] == [
            f"metrics address 127.0.0.1:{port} is already in use"]
    finally:
        taken.close()


def test_a_bad_http_request_is_logged_as_json_and_serving_goes_on(logd_server):
    srv = logd_server("--fsync", "never", "--metrics", "127.0.0.1:0")
    port = int(metrics_url(srv).split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 not http\r\n\r\n")  # e.g. a TLS hello
        reply = s.recv(1024)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert srv.wait_event("metrics_http_error")["error"]
    assert not srv.events("stderr")  # nothing but JSON lines on stderr
    assert scrape(srv)[("logd_head_id", ())] == 0
