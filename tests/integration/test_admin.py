"""Issue 10: admin commands (SHUTDOWN, REFUSE, ACCEPT) on a real server, from
127.0.0.2 (a loopback address that is not admin by default) and with the token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from .wire import Wire

pytestmark = pytest.mark.integration

ADMIN = (("SHUTDOWN",), ("REFUSE",), ("ACCEPT",))


def from_127_0_0_2(srv) -> Wire:  # type: ignore[no-untyped-def]
    try:
        sock = socket.create_connection((srv.host, srv.port), timeout=10, source_address=("127.0.0.2", 0))
    except OSError as exc:  # pragma: no cover - a host without 127/8 routed to lo
        pytest.skip(f"cannot bind a client to 127.0.0.2: {exc}")
    return Wire.adopt(sock)


def reply(w: Wire, *command: str | bytes) -> bytes:
    w.cmd(str(command[0]), *command[1:])
    return w.read_until(b"\r\n")


def test_admin_commands_are_refused_from_127_0_0_2_and_other_commands_served(logd_server) -> None:
    srv = logd_server()
    w = from_127_0_0_2(srv)
    for command in ADMIN:
        line = reply(w, *command)
        assert line == (f"ERR_CLIENT FORBIDDEN {command[0]} is accepted only from 127.0.0.1, ::1 "
                        f"or the unix socket\r\n").encode()
    assert reply(w, "MSG", b"still served") == b"OK 1\r\n"
    assert reply(w, "PING") == b"PONG\r\n"
    assert reply(w, "HEAD") == b"OK 1\r\n"
    assert reply(w, "AUTH", b"guess") == b"ERR_CLIENT BADREQUEST AUTH: no admin token is configured on this server\r\n"
    st = w.stats()
    assert (st["admin_refused"], st["role"]) == (3, "primary")
    refused = srv.events("admin_refused")
    assert [e["command"] for e in refused] == ["SHUTDOWN", "REFUSE", "ACCEPT"]
    assert all(e["peer"].startswith("127.0.0.2:") for e in refused)
    w.sock.close()
    # From 127.0.0.1 (the default list), SHUTDOWN is accepted.
    local = Wire(srv.host, srv.port)
    assert reply(local, "SHUTDOWN") == b"OK\r\n"
    assert srv.proc is not None and srv.proc.wait(20) == 0


def test_the_token_admits_any_peer_after_auth_and_wrong_tokens_are_counted(logd_server, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-with-entropy\n")
    srv = logd_server("--admin-token-file", str(token_file))
    w = from_127_0_0_2(srv)
    assert reply(w, "REFUSE").startswith(b"ERR_CLIENT FORBIDDEN REFUSE is accepted only from 127.0.0.1, "
                                         b"::1 or the unix socket, or after AUTH with the admin token")
    assert reply(w, "AUTH", b"t0ken-with-entropY") == b"ERR_CLIENT FORBIDDEN AUTH: wrong admin token\r\n"
    assert reply(w, "SHUTDOWN").startswith(b"ERR_CLIENT FORBIDDEN")
    assert reply(w, "AUTH", b"t0ken-with-entropy") == b"OK\r\n"
    assert reply(w, "MSG", b"a") == b"OK 1\r\n"
    assert reply(w, "REFUSE") == b"OK 1\r\n"
    assert reply(w, "MSG", b"b").startswith(b"ERR_CLIENT REFUSED")
    assert reply(w, "ACCEPT") == b"OK epoch=2 first=2\r\n"
    st = w.stats()
    assert (st["admin_refused"], st["auth_failures"], st["epoch"]) == (2, 1, 2)
    assert srv.wait_event("auth_failed")["peer"].startswith("127.0.0.2:")
    assert reply(w, "SHUTDOWN") == b"OK\r\n"
    assert srv.proc is not None and srv.proc.wait(20) == 0


def test_the_client_tools_send_the_token_from_the_environment(logd_server) -> None:
    srv = logd_server("--admin-from", "none", "--admin-token", "s3cret")  # TCP is never admin by address

    def logd(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "LOGD_ADMIN_TOKEN"}
        if token is not None:
            env["LOGD_ADMIN_TOKEN"] = token
        return subprocess.run([sys.executable, "-m", "logd", *args, "-H", srv.addr], capture_output=True,
                              text=True, timeout=30, env=env)

    for sub in ("refuse", "accept", "shutdown"):
        out = logd(sub)
        assert out.returncode == 1 and "FORBIDDEN" in out.stderr, (sub, out.stderr)
    out = logd("refuse", token="wrong")
    assert out.returncode == 1 and "wrong admin token" in out.stderr
    assert logd("refuse", token="s3cret").stdout == "0\n"
    assert logd("accept", token="s3cret").stdout == "epoch=2 first=1\n"
    out = logd("shutdown", token="s3cret")
    assert out.returncode == 0, out.stderr
    assert srv.proc is not None and srv.proc.wait(20) == 0
