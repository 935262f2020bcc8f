"""The pure lag arithmetic (logd/events/lag.py)."""

from logd.events.lag import CommitTimes, lag_bytes


def test_lag_seconds_is_the_age_of_the_oldest_missing_commit() -> None:
    t = CommitTimes(resolution=0.0)
    t.record(10, 100.0)
    t.record(20, 105.0)
    t.record(30, 107.0)
    assert t.lag_seconds(30, 30, 200.0) == 0.0
    assert t.lag_seconds(10, 30, 110.0) == 5.0  # lacks 11: committed at 105
    assert t.lag_seconds(0, 30, 110.0) == 10.0
    assert t.lag_seconds(25, 30, 110.0) == 3.0
    assert t.committed_at(31) is None


def test_commit_times_stay_bounded_and_coalesce() -> None:
    t = CommitTimes(size=4, resolution=1.0)
    for i in range(1, 100):
        t.record(i, 1000.0 + i * 0.1)  # ten commits a second
    assert len(t._entries) <= 4
    assert t.committed_at(99) is not None
    # Older than every entry: the oldest entry's age, a lower bound.
    assert t.lag_seconds(0, 99, 1010.0) > 0
    t.record(50, 2000.0)  # an id not after the last is ignored
    assert t._entries[-1][0] == 99


def test_lag_bytes_across_partitions() -> None:
    parts = [(1, 100), (2, 100), (3, 40)]
    assert lag_bytes(parts, (3, 40), (3, 40)) == 0
    assert lag_bytes(parts, (3, 10), (3, 40)) == 30
    assert lag_bytes(parts, (1, 60), (3, 40)) == 40 + 100 + 40
    assert lag_bytes(parts, (1, 0), (3, 40)) == 240
    assert lag_bytes(parts, (3, 50), (3, 40)) == 0
