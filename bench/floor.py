"""The floor under logd: a gevent server that answers W3's MSG without doing anything.

``python bench/run.py -w W3 --logd-cmd "python bench/floor.py"`` runs W3
against it in logd's place: a ``StreamServer`` whose handler reads, counts
the MSGs in what it read (one framed body each, as W3 sends them) and writes
``OK <id>`` per MSG. No parser, no log, no queue: what is left is what
gevent and the interpreter cost per request on this machine, the figure a
Python server cannot go below (bench/PROFILE.rst, "Per request").

It takes ``logd serve``'s flags and ignores all but ``--port``, and logs the
``listening`` event that bench/servers.py waits for. Only single-message MSGs
(W2, W3): a request must arrive whole in one read, which holds for W3's
~130-byte requests on loopback.
"""

from __future__ import annotations

import argparse
import json
import sys

from gevent import socket
from gevent.server import StreamServer

_next = 0


def handle(sock: socket.socket, _address) -> None:
    global _next
    recv, send = sock.recv, sock.sendall
    while True:
        data = recv(65536)
        if not data:
            return
        replies = []
        for _ in range(data.count(b"MSG ")):
            _next += 1
            replies.append(b"OK %d\r\n" % _next)
        send(b"".join(replies))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="serve")
    parser.add_argument("--port", type=int, default=0)
    args, _ = parser.parse_known_args(argv)
    server = StreamServer(("127.0.0.1", args.port), handle)
    server.init_socket()
    print(json.dumps({"event": "listening", "port": server.server_port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
