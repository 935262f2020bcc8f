"""In-process figures for the per-message work, no server (bench/PROFILE.rst).

    python bench/micro.py [N]              # whichever implementation is built
    LOGD_PURE=1 python bench/micro.py [N]  # pure Python

follower: Replicator.on_data over W6's bytes (100-byte messages, MSGs of 100,
64 KiB DATA chunks); client: ReplyParser.next_records over the same records
in 256 KiB receives (the parser alone, as Connection drives it);
client read(): ``Client.read(1, n)`` consumed whole (W4py's loop) over a
socketpair whose far end, a forked child, answers the READ with the same
records and +EOF: the client's whole read path, receives included, without
a server. CPU time of this process, best of 3.
"""

from __future__ import annotations

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from follower.replicator import Replicator  # noqa: E402
from logd import speedups  # noqa: E402
from logd.client import RECV_SIZE, Client  # noqa: E402
from logd.protocol import Eof, ReplyParser  # noqa: E402
from logd.protocol.replication import Data  # noqa: E402
from logd.record import encode_batch  # noqa: E402

CHUNK = 65536


def follower(blob: bytes, n: int) -> float:
    rep = Replicator(0, 0, 0)
    t = time.process_time()
    for off in range(0, len(blob), CHUNK):
        rep.on_data(Data(0, off, blob[off : off + CHUNK], off + CHUNK >= len(blob)))
    dt = time.process_time() - t
    assert rep.last_id == n, rep.last_id
    return dt


def client(blob: bytes, n: int) -> float:
    parser = ReplyParser()
    data = memoryview(blob + b"+EOF\r\n")
    step = parser.next_records
    got = 0
    t = time.process_time()
    for off in range(0, len(data), RECV_SIZE):  # as Connection.receive hands them over
        parser.receive_data(data[off : off + RECV_SIZE])
        while True:
            run = step()
            if type(run) is not list:
                break
            got += len(run)
    dt = time.process_time() - t
    assert got == n and type(run) is Eof, (got, run)
    return dt


def _answer(sock: socket.socket, reply: bytes) -> None:
    """The forked child: read one request line, send ``reply``, wait for the close."""
    got = b""
    while not got.endswith(b"\r\n"):
        more = sock.recv(4096)
        if not more:
            return
        got += more
    sock.sendall(reply)
    sock.recv(1)


def client_read(blob: bytes, n: int) -> float:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ours.close()
        try:
            _answer(theirs, b"OK\r\n" + blob + b"+EOF\r\n")
        finally:
            os._exit(0)
    theirs.close()
    try:
        with Client(sock=ours) as c:
            got = 0
            t = time.process_time()
            for rec in c.read(1, n):  # bench/pyclients.py's W4py loop
                last = rec.id
                got += 1
            dt = time.process_time() - t
    finally:
        ours.close()
        os.waitpid(pid, 0)
    assert got == n and last == n, (got, last)
    return dt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    body = b"x" * 100
    blob = b"".join(encode_batch(first, [body] * 100)[0] for first in range(1, n + 1, 100))
    print(f"{speedups.IMPLEMENTATION}: {n} messages, {len(blob) / 1e6:.1f} MB")
    best = min(follower(blob, n) for _ in range(3))
    print(f"follower verification: {best / n * 1e6:.2f} us/msg ({len(blob) / best / 1e6:.0f} MB/s)")
    best = min(client(blob, n) for _ in range(3))
    print(f"client run reader:     {best / n * 1e6:.2f} us/record")
    best = min(client_read(blob, n) for _ in range(3))
    print(f"client read():         {best / n * 1e6:.2f} us/record")


if __name__ == "__main__":
    main()
