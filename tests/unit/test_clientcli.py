"""Pure parts of the command-line client: text escaping, stdin line splitting."""

from __future__ import annotations

import random
import re

import pytest

from logd.clientcli import _format_text, follower_table
from logd.livewrite import LineSplitter

_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)")
_NAMED = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}


def unescape(text: str) -> bytes:
    """Invert the documented text escapes back to the body's bytes."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        code = m.group(1)
        if code[0] == "x":
            out.append(int(code[1:], 16))
        elif code[0] == "u":
            out += chr(int(code[1:], 16)).encode("utf-8")
        else:
            out += _NAMED[code].encode()
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def shown(body: bytes) -> str:
    line = _format_text(7, body).decode("utf-8")
    assert line.startswith("7\t") and line.endswith("\n")
    return line[2:-1]


CONTROL = [bytes([b]) for b in [*range(0x20), 0x7F]]


@pytest.mark.parametrize("body", CONTROL + [b"\\", b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80"])
def test_text_escapes_every_control_byte_backslash_and_bad_utf8(body: bytes) -> None:
    text = shown(b"a" + body + b"z")
    assert all(0x20 <= ord(ch) != 0x7F and not 0x80 <= ord(ch) < 0xA0 for ch in text), repr(text)
    assert "\\" in text  # it was escaped, not passed or dropped
    assert unescape(text) == b"a" + body + b"z"


def test_text_escapes_c1_controls() -> None:
    body = "\u009b31m".encode()  # CSI as one code point: some terminals obey it
    text = shown(body)
    assert "\u009b" not in text and unescape(text) == body


def test_text_is_unambiguous() -> None:
    bodies = [b"\xff", b"\\xff", b"\\\xff", b"\n", b"\\n", b"\\", b"\\\\", "é".encode(), b"\t\\t"]
    texts = [shown(b) for b in bodies]
    assert len(set(texts)) == len(bodies)
    assert [unescape(t) for t in texts] == bodies
    assert shown("héllo wörld".encode()) == "héllo wörld"


def test_text_round_trips_random_bodies() -> None:
    rng = random.Random(7)
    for _ in range(500):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(12)))
        assert unescape(shown(body)) == body


# -- LineSplitter -----------------------------------------------------------------------

STREAM = b"first\nsecond\r\n\n\r\nfourth has \ttabs\nlast \r no newline"
BODIES = [b"first", b"second", b"fourth has \ttabs", b"last \r no newline"]


def split(chunks: list[bytes]) -> tuple[list[bytes], int]:
    s = LineSplitter()
    got: list[bytes] = []
    for chunk in chunks:
        got += s.feed(chunk)
    got += s.finish()
    return got, s.skipped


def test_splitter_whole_by_byte_and_random_chunks() -> None:
    assert split([STREAM]) == (BODIES, 2)
    assert split([bytes([b]) for b in STREAM]) == (BODIES, 2)
    rng = random.Random(1)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(STREAM)), rng.randrange(len(STREAM) // 2)))
        chunks = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)])]
        assert split(chunks) == (BODIES, 2)


def test_splitter_counts_partial_line() -> None:
    s = LineSplitter()
    assert s.feed(b"abc") == []
    assert s.pending == 3
    assert s.feed(b"def\nx") == [b"abcdef"]
    assert s.finish() == [b"x"] and s.pending == 0


def test_follower_table_lists_followers_oldest_connection_first() -> None:
    stats = {
        "head": 5,
        "followers": 2,
        "follower_12": "addr=127.0.0.1:5 name=b written=1:10:3 synced=1:10:3 lag_ids=2 lag_bytes=40 "
                       "lag_seconds=1.250 connected_since=2026-12-01T23:34:37Z last_report=0.5s",
        "follower_3": "addr=127.0.0.1:4 name=a written=1:20:5 synced=1:0:0 lag_ids=0 lag_bytes=0 "
                      "lag_seconds=0.000 connected_since=2026-12-01T23:30:00Z last_report=never",
    }
    lines = follower_table(stats)
    assert lines[0] == ""
    assert lines[1].split() == ["ADDRESS", "NAME", "WRITTEN", "P:O:ID", "SYNCED", "P:O:ID", "LAG", "IDS",
                                "LAG", "BYTES", "LAG", "S", "CONNECTED", "SINCE", "LAST", "REPORT"]
    assert lines[2].split() == ["127.0.0.1:4", "a", "1:20:5", "1:0:0", "0", "0", "0.000", "2026-12-01T23:30:00Z", "never"]
    assert lines[3].split() == ["127.0.0.1:5", "b", "1:10:3", "1:10:3", "2", "40", "1.250", "2026-12-01T23:34:37Z", "0.5s"]
    # Columns line up: every cell starts where its header does.
    for row in lines[2:]:
        assert row.index(" 1:") + 1 == lines[1].index("WRITTEN")
    assert follower_table({"head": 5, "followers": 0}) == []
