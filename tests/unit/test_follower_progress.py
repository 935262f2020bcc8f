"""The catch-up progress arithmetic and its terminal line (follower/progress.py)."""

from follower.progress import fields, line


def test_fields_give_rates_and_eta() -> None:
    f = fields(copied_bytes=2_000_000, copied_ids=20_000, elapsed=4.0, at_id=20_000, head=100_000)
    assert f == {"bytes": 2_000_000, "ids": 20_000, "bytes_per_second": 500_000, "ids_per_second": 5000,
                 "id": 20_000, "primary_head": 100_000, "ids_left": 80_000, "eta_seconds": 16.0}
    assert line(f) == ("catching up: 2.0 MB, 20000 ids copied (500.0 KB/s, 5000 ids/s), "
                       "at id 20000 of 100000, ETA 0:16")


def test_nothing_copied_yet_has_no_eta_and_long_etas_show_hours() -> None:
    f = fields(0, 0, 0.0, 10, 500)
    assert f["eta_seconds"] is None and f["ids_left"] == 490
    assert line(f).endswith("at id 10 of 500, ETA ?")
    assert "0 B, 0 ids copied (0 B/s" in line(f)
    slow = fields(1000, 1, 1.0, 1, 7202)
    assert line(slow).endswith("ETA 2:00:01")
    done = fields(5000, 50, 1.0, 500, 500)
    assert done["eta_seconds"] == 0.0 and line(done).endswith("ETA 0:00")
