"""The pure parts of ``logd failover`` (logd/failover.py): what it reads from STATS and errors."""

from __future__ import annotations

from logd import errors, failover


def test_same_address_as_written_or_resolved() -> None:
    assert failover.same_address("127.0.0.1:1774", "127.0.0.1:1774")
    assert failover.same_address("localhost:1774", "127.0.0.1:1774")
    assert not failover.same_address("127.0.0.1:1774", "127.0.0.1:1775")
    assert not failover.same_address("", "127.0.0.1:1774")
    assert not failover.same_address("no port", "127.0.0.1:1774")


def test_fsynced_id_from_a_replicas_stats() -> None:
    assert failover.fsynced_id({"follower_fsynced": "3:1048576:51240"}) == 51240
    assert failover.fsynced_id({"follower_fsynced": ""}) == -1
    assert failover.fsynced_id({}) == -1
    assert failover.fsynced_id({"follower_fsynced": "3:x:y"}) == -1


def test_only_the_writer_lock_error_is_retried() -> None:
    locked = errors.from_reply("ERR", "LOCKED data directory /d is in use by pid 7 (logd-follower, "
                                      "since 2026-12-02T00:00:00Z); stop it first")
    assert type(locked) is errors.Locked and failover.is_lock_error(locked)
    before = errors.from_reply("ERR", "STORAGE data directory /d is in use by pid 7 (logd-follower, "
                                      "since 2026-12-02T00:00:00Z); stop it first")  # a server before LOCKED
    assert type(before) is errors.StorageError and failover.is_lock_error(before)
    assert not failover.is_lock_error(errors.from_reply("ERR", "STORAGE cannot write the metadata file"))
    assert not failover.is_lock_error(errors.Forbidden("ACCEPT is accepted only from ..."))
