"""Ways to split a byte stream the way a socket may deliver it, for parser tests.

Every parser test feeds its input whole, one byte at a time and in seeded
random chunks through these, so each boundary a recv could fall on is tried.
A random split is fixed by its seed (or by a ``random.Random`` the caller
draws several splits from), so a failure replays exactly.
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

Chunker = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    if data:
        yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def by_line(data: bytes) -> Iterator[bytes]:
    """Up to and including each LF: what a line-buffered peer (nc, a terminal) sends."""
    start = 0
    while start < len(data):
        nl = data.find(b"\n", start)
        stop = len(data) if nl < 0 else nl + 1
        yield data[start:stop]
        start = stop


def random_chunks(data: bytes, seed: int | random.Random, largest: int) -> Iterator[bytes]:
    """Chunks of 1..``largest`` bytes, evenly drawn."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.randint(1, largest)
        yield data[pos : pos + n]
        pos += n


def mixed_chunks(data: bytes, seed: int) -> Iterator[bytes]:
    """Mostly 1-3 bytes, some up to 64, some up to 4096: splits inside every
    field and also across many whole commands."""
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.choice((1, 2, 3, rng.randint(1, 64), rng.randint(1, 4096)))
        yield data[pos : pos + n]
        pos += n


def seeded(seed: int, largest: int | None = None) -> Chunker:
    """A one-argument chunker: ``random_chunks`` with this seed and size, or
    ``mixed_chunks`` when ``largest`` is None. Named ``random<seed>`` for test ids."""
    def split(data: bytes) -> Iterator[bytes]:
        if largest is None:
            return mixed_chunks(data, seed)
        return random_chunks(data, seed, largest)

    split.__name__ = split.__qualname__ = f"random{seed}"
    return split

