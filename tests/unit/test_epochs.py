"""logd/log/epochs.py: where two epoch histories part."""

from __future__ import annotations

from logd.log.epochs import divergence, diverged_message, epoch_of, parse_point


def test_epoch_of() -> None:
    h = ((1, 1), (2, 51), (3, 51), (4, 70))
    assert [epoch_of(h, x) for x in (1, 50, 51, 69, 70, 10**9)] == [1, 1, 3, 3, 4, 4]
    assert epoch_of((), 5) == 0 and epoch_of(((2, 10),), 9) == 0


def test_a_replaced_primary_with_unreplicated_writes_parts_where_the_new_epoch_begins() -> None:
    old, new = ((1, 1),), ((1, 1), (2, 51))
    assert divergence(old, new, 60) == 51  # ids 51..60 are epoch 1 here, epoch 2 there
    assert divergence(old, new, 51) == 51
    assert divergence(old, new, 50) is None  # all replicated: it may follow
    assert divergence(new, old, 50) is None


def test_two_accepts_part_even_with_the_same_epoch_number() -> None:
    a, b = ((1, 1), (2, 50)), ((1, 1), (2, 60))
    assert divergence(a, b, 70) == 50 and divergence(b, a, 80) == 50
    assert divergence(a, b, 49) is None
    assert divergence(((1, 1), (3, 40)), ((1, 1), (2, 40)), 45) == 40


def test_unknown_histories_and_empty_epochs() -> None:
    assert divergence((), ((1, 1), (2, 5)), 9) is None
    assert divergence(((1, 1),), (), 9) is None
    # An epoch in which nothing was written does not make a difference by itself.
    assert divergence(((1, 1), (2, 51), (3, 51)), ((1, 1), (3, 51)), 60) is None


def test_message_round_trip() -> None:
    msg = diverged_message(((1, 1),), ((1, 1), (2, 51)), 51, 60)
    assert parse_point(msg) == (1, 51)
    assert "ids 51..60" in msg and "its epoch 2" in msg
    assert parse_point("history differs: the follower's is x") is None
