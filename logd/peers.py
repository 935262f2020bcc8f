"""The unclean-restart peer check (issue 10, "the unplanned case").

A primary that restarts after an unclean stop (no clean marker: kill -9, a
crash, power loss) may have been replaced while it was down: an operator
ACCEPTed one of its followers' read replicas. Before it takes a write it asks
the peers it knows (the followers it served, by the address each advertised,
kept in its meta file; and every ``--peer``) for their role and epoch, all at
once, within ``--peer-timeout``:

- a peer in a higher epoch: it comes back refusing and names that peer (or
  the primary that peer names) as the new primary;
- no peer answers: it comes back refusing too ("an operator must ACCEPT"),
  since it cannot tell "they are all down" from "I am cut off from the new
  primary" (safety first, as Kafka's unclean.leader.election=false);
- otherwise (someone answered, no higher epoch) it starts as primary.

With no peers known it starts as primary without asking, as before. ``decide``
is the pure rule; ``ask`` is one bounded connect + STATS (the daemon runs one
per peer in threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .errors import LogdError

__all__ = ["Answer", "Verdict", "ask", "decide", "no_answer"]


@dataclass(frozen=True, slots=True)
class Answer:
    address: str
    role: str = ""
    epoch: int = 0
    new_primary: str = ""
    error: str = ""  # why it did not answer ("": it did)

    @property
    def answered(self) -> bool:
        return not self.error

    def describe(self) -> str:
        if self.error:
            return f"{self.address}: {self.error}"
        return f"{self.address}: {self.role} in epoch {self.epoch}"


@dataclass(frozen=True, slots=True)
class Verdict:
    refuse: bool
    new_primary: str  # whom refusals name ("": not known)
    reason: str  # for the log and STATS' refusing_reason ("" when not refusing)
    higher: Answer | None = None  # the peer in the highest epoch above ours


def no_answer(address: str, timeout: float) -> Answer:
    return Answer(address, error=f"no answer within {timeout:g}s")


def decide(our_epoch: int, answers: Iterable[Answer], timeout: float) -> Verdict:
    """What a primary restarting after an unclean stop does, given its peers' answers."""
    answers = list(answers)
    higher = [a for a in answers if a.answered and a.epoch > our_epoch]
    if higher:
        top = max(higher, key=lambda a: a.epoch)
        named = top.address if top.role == "primary" or not top.new_primary else top.new_primary
        return Verdict(True, named, f"unclean restart: peer {top.address} is {top.role} in epoch "
                       f"{top.epoch}, above this server's {our_epoch}; the new primary is {named}",
                       top)
    if answers and not any(a.answered for a in answers):
        asked = "; ".join(a.describe() for a in answers)
        return Verdict(True, "", f"unclean restart: no peer answered within {timeout:g}s "
                       f"({asked}); an operator must ACCEPT (logd accept) once sure no other "
                       "server was promoted")
    return Verdict(False, "", "")


def ask(address: str, timeout: float) -> Answer:
    """One peer's role and epoch: connect and STATS, each bounded by ``timeout``.
    Never raises: a failure is an Answer with ``error``."""
    from .client import connect  # the client is not needed by a server that knows no peers

    try:
        with connect(address, timeout=timeout, connect_timeout=timeout) as client:
            stats = client.stats()
    except (LogdError, OSError) as exc:
        return Answer(address, error=str(getattr(exc, "message", "") or exc))
    epoch = stats.get("epoch", 0)
    return Answer(address, str(stats.get("role", "")), epoch if isinstance(epoch, int) else 0,
                  str(stats.get("new_primary", "") or ""))
