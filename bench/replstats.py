"""Pure helpers of the replication workloads (W6-W8, W1m/W2m): no sockets, no clock.

- ``parse_stats``: logd's text STATS body -> {key: value}.
- ``parse_follower``: one ``follower_<conn>`` STATS value (``key=value`` words).
- ``parse_info``: Redis ``INFO replication`` -> {key: value}, ``slaveN`` split.
- ``Lag``: samples of (time, primary head, follower written id[, lag seconds])
  -> lag in ids and in milliseconds (method in bench/README.rst, "W7").
- ``redis_synced``: is a replica's full sync done (link up, offsets equal)?
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["parse_stats", "parse_follower", "follower_lines", "parse_info", "redis_synced", "Lag"]


def parse_stats(body: bytes | str) -> dict[str, str]:
    """``key: value`` lines (logd STATS text) -> {key: value}; values kept as text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_follower(value: str) -> dict[str, object]:
    """``addr=... written=P:O:ID synced=P:O:ID lag_ids=N ...`` -> dict.

    ``written``/``synced`` become (partition, offset, id) tuples; integer and
    float words become numbers; ``lag_seconds`` (or ``lag_s``, ``lag_ms``), when
    the server has it, is read as seconds.
    """
    out: dict[str, object] = {}
    for word in value.split():
        key, sep, v = word.partition("=")
        if not sep:
            continue
        if key in ("written", "synced"):
            parts = v.split(":")
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                out[key] = (int(parts[0]), int(parts[1]), int(parts[2]))
            continue
        out[key] = _number(v.rstrip("s") if key in ("lag_seconds", "lag_s") else v)
    if "lag_ms" in out and "lag_seconds" not in out and isinstance(out["lag_ms"], int | float):
        out["lag_seconds"] = out["lag_ms"] / 1000
    if "lag_s" in out and "lag_seconds" not in out:
        out["lag_seconds"] = out["lag_s"]
    return out


def follower_lines(stats: dict[str, str]) -> list[dict[str, object]]:
    """Every connected follower of a primary's STATS, in connection order."""
    keys = sorted((k for k in stats if k.startswith("follower_") and k[9:].isdigit()), key=lambda k: int(k[9:]))
    return [parse_follower(stats[k]) for k in keys]


def _number(v: str) -> object:
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def parse_info(text: bytes | str) -> dict[str, object]:
    """Redis ``INFO`` text -> {key: value}; ``slaveN:ip=..,port=..,offset=..`` -> dict."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out: dict[str, object] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key.startswith("slave") and key[5:].isdigit():
            out[key] = {k: _number(v) for k, _, v in (w.partition("=") for w in value.split(","))}
        else:
            out[key] = _number(value)
    return out


def redis_synced(replica: dict[str, object], master_offset: int) -> bool:
    """A replica's ``INFO replication`` says its full sync is done: the link is up,
    nothing is loading, and it has processed the master's offset."""
    if replica.get("master_link_status") != "up" or replica.get("master_sync_in_progress") not in (0, None):
        return False
    offset = replica.get("slave_repl_offset", replica.get("master_repl_offset"))
    return isinstance(offset, int) and offset >= master_offset


class Lag:
    """The follower's lag from samples of the primary's STATS.

    ``add(t, head, written, lag_seconds=None)`` for each sample (t in seconds,
    any monotonic clock). In ids: ``head - written``. In ms: the primary's own
    ``lag_seconds`` when it reports one; otherwise, from the sampled (t, head)
    pairs, the time since the primary's head first reached the id the follower
    has now (0 when it has the head), with the moment the head reached an id
    interpolated linearly between the two samples around it.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self.heads: list[int] = []  # never decreasing (the log only grows)
        self.ids: list[int] = []
        self.ms: list[float] = []
        self.server_ms = False  # the lag in ms came from the primary

    def add(self, t: float, head: int, written: int, lag_seconds: float | None = None) -> None:
        if self.heads and head < self.heads[-1]:
            head = self.heads[-1]
        self.times.append(t)
        self.heads.append(head)
        self.ids.append(max(0, head - written))
        if lag_seconds is not None:
            self.server_ms = True
            self.ms.append(lag_seconds * 1000)
        else:
            self.ms.append(self.reached_ago(t, written) * 1000)

    def reached_at(self, target: int) -> float | None:
        """When the sampled head first reached ``target`` (interpolated), or None if never."""
        j = bisect_left(self.heads, target)
        if j >= len(self.heads):
            return None
        if j == 0:
            return self.times[0]
        h0, h1 = self.heads[j - 1], self.heads[j]
        t0, t1 = self.times[j - 1], self.times[j]
        return t0 + (t1 - t0) * (target - h0) / (h1 - h0)

    def reached_ago(self, t: float, written: int) -> float:
        """Seconds since the head first reached ``written``, 0 if the follower has the head."""
        if not self.heads or written >= self.heads[-1]:
            return 0.0
        at = self.reached_at(written)
        return 0.0 if at is None else max(0.0, t - at)
