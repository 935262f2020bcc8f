"""logd.backoff: pure, so every property is checked with a pinned ``rand``."""

from __future__ import annotations

import random

import pytest

from logd import backoff


def low() -> float:
    return 0.0


def high() -> float:
    return 1.0


def test_grows_caps_and_jitters() -> None:
    lo = [backoff.delay(n, 0.1, 2.0, rand=low) for n in range(12)]
    hi = [backoff.delay(n, 0.1, 2.0, rand=high) for n in range(12)]
    assert lo[0] == pytest.approx(0.05) and hi[0] == pytest.approx(0.1)
    assert all(a <= b for a, b in zip(hi, hi[1:]))  # never shrinks
    assert all(a <= b for a, b in zip(lo, lo[1:]))
    assert max(hi) == pytest.approx(2.0) and max(lo) == pytest.approx(1.0)
    assert backoff.delay(10_000, 0.1, 2.0) <= 2.0  # no overflow on long outages
    rng = random.Random(1)
    samples = {backoff.delay(3, 0.1, 2.0, rand=rng.random) for _ in range(20)}
    assert len(samples) > 1 and all(0.4 <= s <= 0.8 for s in samples)


def test_doubles_until_the_cap() -> None:
    got = [backoff.delay(n, 0.05, 1.0, rand=high) for n in range(7)]
    assert got == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_equal_jitter_is_half_fixed() -> None:
    # Whatever rand says, no retry comes sooner than half the delay (no
    # immediate retry) nor later than the whole of it.
    for n in range(40):
        for r in (0.0, 0.25, 0.5, 0.999, 1.0):
            d = min(5.0, 0.05 * 2**n)
            assert d / 2 <= backoff.delay(n, rand=lambda: r) <= d


def test_defaults_are_the_follow_defaults() -> None:
    # follow(reconnect=True) documents backoff_base=0.05, backoff_cap=5.0.
    assert backoff.delay(0, rand=high) == pytest.approx(0.05)
    assert backoff.delay(100, rand=high) == pytest.approx(5.0)


def test_huge_failure_counts_are_cheap_and_capped() -> None:
    assert backoff.delay(10**9, 0.05, 30.0, rand=high) == pytest.approx(30.0)


@pytest.mark.parametrize("args", [(-1, 0.05, 1.0), (0, 0.0, 1.0), (0, 0.05, 0.0), (0, -1.0, 1.0)])
def test_nonsense_is_refused(args: tuple[int, float, float]) -> None:
    with pytest.raises(ValueError):
        backoff.delay(*args)
