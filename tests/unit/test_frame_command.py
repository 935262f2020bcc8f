"""The parser's native whole-command path (``_speedups.frame_command``) against the pure parser.

test_protocol.py runs its corpus with and without the native paths; here
random streams of framed and inline commands, valid and broken at random
bytes, go through both parsers whole, byte by byte and in random chunks,
and every command, error class and error message must be the same.
"""

from __future__ import annotations

import random
from typing import Iterator

import pytest

from logd.errors import ClientError, ProtocolError
from logd.protocol import NEED_DATA, CommandParser, Limits, commands
from logd.speedups import native
from tests.chunkers import bytewise, random_chunks

pytestmark = pytest.mark.skipif(native is None, reason="logd._speedups is not built")

LIMITS = Limits(max_line=64, max_message=300, max_args=20, max_request=2000)

PIECES = [
    b"MSG 1\r\n5 hello\r\n", b"msg 2\r\n1 a\r\n3 bcd\r\n", b"HEAD\r\n", b"PING\r\n", b"ping 0\r\n",
    b"READ 2\r\n1 5\r\n2 10\r\n", b"MSG 0\r\n", b"MSG 1\r\n0 \r\n", b"MSG hello world\r\n",
    b"READ 1 10\r\n", b"STATS\r\n", b"NOPE 1\r\n1 x\r\n", b"MSG 21\r\n", b"MSG 1\r\n301 " + b"x" * 301 + b"\r\n",
    b"MSG 1\n5 hello\r\n", b"\r\n", b"MSG 1\r\n5 hello\n", b"MSG 1\r\n6 hello\r\n", b"MSG  1\r\n1 a\r\n",
    b"MSG 0001\r\n1 a\r\n", b"MSG 1234567\r\n", b"M" * 17 + b" 1\r\n1 a\r\n", b"MSG 1\r\n1 a\r\r\n",
    b"MSG 1\r\n-1 a\r\n", b"MSG\t1\r\n1 a\r\n", b"MSG 3\r\n" + b"".join(b"290 " + b"y" * 290 + b"\r\n" for _ in range(3)),
    b"CLOSE\r\n", b"SHUTDOWN\r\n", b"ACK 6\r\n1 1\r\n1 2\r\n1 3\r\n1 1\r\n1 2\r\n1 3\r\n",
]


def _stream(rng: random.Random) -> bytes:
    data = bytearray(b"".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 12))))
    for _ in range(rng.randrange(0, 3)):  # damage a few bytes
        if data:
            data[rng.randrange(len(data))] = rng.choice(b"0123456789 \r\nMSGx\x00")
    return bytes(data)


def _parse(chunks: Iterator[bytes]) -> list[object]:
    parser = CommandParser(LIMITS)
    out: list[object] = []
    for chunk in [*chunks, b""]:
        parser.receive_data(chunk)
        while True:
            try:
                cmd = parser.next_command()
            except ProtocolError as exc:
                return [*out, ("protocol", exc.message)]
            except ClientError as exc:
                out.append((type(exc).__name__, exc.message))
                continue
            if cmd is NEED_DATA:
                break
            out.append(cmd)
    return out


def _both(data: bytes, split: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> tuple[list[object], list[object]]:
    def chunks() -> Iterator[bytes]:
        if split == "whole":
            return iter([data])
        if split == "bytewise":
            return bytewise(data)
        return random_chunks(data, random.Random(seed), 40)

    assert native is not None
    with monkeypatch.context() as m:
        m.setattr(commands, "_frame_command", None)
        m.setattr(commands, "_frame_args", None)
        pure = _parse(chunks())
    with monkeypatch.context() as m:
        m.setattr(commands, "_frame_command", native.frame_command)
        m.setattr(commands, "_frame_args", native.frame_args)
        fast = _parse(chunks())
    return pure, fast


@pytest.mark.parametrize("split", ["whole", "bytewise", "random"])
def test_same_commands_and_errors_as_the_pure_parser(split: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261202)
    for i in range(400):
        data = _stream(rng)
        pure, fast = _both(data, split, i, monkeypatch)
        assert fast == pure, data


def test_takes_the_common_case_and_leaves_the_rest() -> None:
    assert native is not None
    frame = native.frame_command
    assert frame(b"MSG 2\r\n1 a\r\n2 bc\r\nHEAD\r\n", 0, 64, 20, 300, 2000) == (b"MSG", [b"a", b"bc"], 18)
    assert frame(b"xxhead\r\n", 2, 64, 20, 300, 2000) == (b"HEAD", [], 8)
    for left in (b"MSG 1\r\n5 hel", b"MSG hello\r\n", b"MSG 1\n5 hello\r\n", b"MSG 21\r\n", b"", b"\r\nPING\r\n",
                 b"MSG 1\r\n301 " + b"x" * 301 + b"\r\n"):
        assert frame(left, 0, 64, 20, 300, 2000) is None, left
