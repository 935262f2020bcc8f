"""``logd failover``: a planned switch of the primary from A to B, step by step.

The steps (issue 10; the contract with the follower is docs/server.rst,
"Planned failover"), each a plain function over ``logd.connect`` clients,
each printed as it happens with what it saw:

1. ``check``: A is a primary; B is a read replica (``logd serve --refuse``)
   whose follower follows A and is running. Nothing has changed yet.
2. ``refuse``: ``REFUSE 0 B`` on A; its reply is the final id F, fsynced.
   From here A takes no writes (safe: nothing can be lost, nothing forks).
3. ``catch up``: wait until B's follower reports F fsynced
   (``follower_fsynced`` in B's STATS, from its status file).
4. ``fence``: A's stream sends ``+REFUSED F B``; B's follower, started with
   ``--advertise B``, recognises itself, exits 0 and releases the writer
   lock. Seen from here as ACCEPT on B failing with the lock error until it
   does not: ACCEPT is retried until it succeeds or the time is up.
5. ``accept``: ACCEPT on B starts its new epoch at F + 1.
6. ``done``: the new primary, its epoch and the head ids on both sides.

``--timeout`` bounds everything after REFUSE: A refuses for at most that long
before ``logd failover`` gives up. A failure stops at once and leaves a safe
state (A refusing, or nothing changed), says which and what to run next, and
exits with its own code (``EXIT_*`` below, docs/client.rst).
``abort`` returns A to primary (ACCEPT on A, a new epoch there) unless B was
promoted.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import errors
from .client import Client, connect
from .client.connection import parse_address
from .client.connection import same_address as as_written

__all__ = ["EXIT_OK", "EXIT_UNREACHABLE", "EXIT_PRECHECK", "EXIT_REFUSE_FAILED",
           "EXIT_NOT_CAUGHT_UP", "EXIT_NOT_FENCED", "EXIT_ACCEPT_FAILED", "EXIT_ABORT_REFUSED",
           "FailoverError", "Outcome", "run", "abort", "same_address", "is_lock_error",
           "fsynced_id", "dial", "DEFAULT_TIMEOUT"]

EXIT_OK = 0
EXIT_UNREACHABLE = 10  # A or B cannot be reached before REFUSE: nothing changed
EXIT_PRECHECK = 11  # A is not a primary, or B is not a replica following A: nothing changed
EXIT_REFUSE_FAILED = 12  # REFUSE on A failed: A may or may not refuse (the message says)
EXIT_NOT_CAUGHT_UP = 13  # B did not have the final id fsynced in time: A refusing
EXIT_NOT_FENCED = 14  # B's follower kept the lock until the timeout: A refusing, B a replica
EXIT_ACCEPT_FAILED = 15  # ACCEPT on B failed otherwise: A refusing
EXIT_ABORT_REFUSED = 16  # --abort: B was promoted (or could not be checked); nothing done

DEFAULT_TIMEOUT = 30.0
POLL = 0.1  # seconds between looks at B while waiting
STEPS = 6


class FailoverError(Exception):
    """A step failed: ``exit_status``, what happened, the state left, what to run next."""

    def __init__(self, exit_status: int, what: str, state: str, next_: str) -> None:
        super().__init__(what)
        self.exit_status = exit_status
        self.what = what
        self.state = state
        self.next = next_


@dataclass(frozen=True, slots=True)
class Outcome:
    final_id: int  # A's final id
    epoch: int  # B's new epoch
    first_id: int  # the first id of that epoch on B
    head_a: int
    head_b: int


Say = Callable[[str], None]


# -- pure helpers -----------------------------------------------------------------


def _resolve(parsed: tuple[int, str | tuple[str, int]]) -> set[tuple[str, int]]:
    _, where = parsed
    if not isinstance(where, tuple):  # a unix socket path: only equal paths match
        return set()
    try:
        infos = socket.getaddrinfo(where[0], where[1], type=socket.SOCK_STREAM)
    except OSError:
        return set()
    return {(str(info[4][0]), int(info[4][1])) for info in infos}


def same_address(a: str, b: str) -> bool:
    """Whether two addresses name the same endpoint: equal once parsed
    (``client.connection.same_address``, as the follower compares its
    ``--advertise``), or
    resolving to a common address (``localhost:1774`` and ``127.0.0.1:1774``:
    B's follower may name A as the operator does not)."""
    if as_written(a, b):
        return True
    try:
        return bool(_resolve(parse_address(a)) & _resolve(parse_address(b)))
    except errors.LogdError:
        return False


def is_lock_error(exc: BaseException) -> bool:
    """ACCEPT on a read replica whose directory a follower still holds (daemon.promote)."""
    if isinstance(exc, errors.Locked):
        return True
    # A server from before ERR LOCKED said ERR STORAGE with this message (a mixed-version upgrade).
    return isinstance(exc, errors.StorageError) and "is in use by" in exc.message


def fsynced_id(stats: dict[str, Any]) -> int:
    """The id B's follower has fsynced, from a read replica's ``follower_fsynced``
    (``partition:offset:id``; watch.py); -1 when it does not say."""
    words = str(stats.get("follower_fsynced", "")).split(":")
    return int(words[2]) if len(words) == 3 and words[2].isdigit() else -1


# -- connections -------------------------------------------------------------------


Dial = Callable[[str], Client]  # address -> a connected client that may send admin commands


def dial(address: str) -> Client:
    """The default ``Dial``: ``logd.connect`` (the CLI's also sends $LOGD_ADMIN_TOKEN)."""
    return connect(address)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, errors.LogdError):
        return f"{exc.code} {exc.message}" if exc.message else exc.code
    return str(exc)


# -- the steps -----------------------------------------------------------------------


def check(a: Client, b: Client, addr_a: str, addr_b: str, say: Say) -> dict[str, Any]:
    """Step 1: A is a primary, B a read replica whose running follower follows A.
    Returns A's STATS.

    Raises:
        FailoverError: EXIT_PRECHECK (nothing changed).
    """
    sa, sb = a.stats(), b.stats()
    unchanged = "nothing was changed"

    def fail(what: str, next_: str) -> FailoverError:
        return FailoverError(EXIT_PRECHECK, what, unchanged, next_)

    resuming = sa.get("role") == "refusing" and same_address(str(sa.get("new_primary", "")), addr_b)
    if sa.get("role") != "primary" and not resuming:
        raise fail(f"A ({addr_a}) is not a primary: role {sa.get('role')!r}"
                   + (f", new primary {sa['new_primary']}" if sa.get("new_primary") else ""),
                   "check which server is the primary (logd stats -H ADDR) and name it with --from")
    if sb.get("role") != "replica":
        raise fail(f"B ({addr_b}) is not a read replica: role {sb.get('role')!r}",
                   "name a read replica (logd serve --refuse over a logd-follower's directory) with --to")
    followed = str(sb.get("primary", ""))
    if not same_address(followed, addr_a):
        raise fail(f"B's follower follows {followed or 'nothing known'!s}, not A ({addr_a})",
                   f"start B's logd-follower with --primary {addr_a} --advertise {addr_b}, "
                   "or name its primary with --from")
    link = str(sb.get("link", ""))
    # Run again after a failure, the follower may have handed over already (link stopped):
    # steps 3 and 4 check what matters, the final id fsynced and the lock released.
    if link not in ("streaming", "catching_up", "connecting") and not resuming:
        raise fail(f"B's follower is not running (link {link!r}: {sb.get('link_reason', '')})",
                   f"start B's logd-follower (--primary {addr_a} --advertise {addr_b}) and retry")
    what = "already refusing, naming B (a failover run again)" if resuming else "primary"
    say(f"[1/{STEPS}] check: A {addr_a} is {what} (epoch {sa.get('epoch')}, head {sa.get('head')}); "
        f"B {addr_b} is a read replica (epoch {sb.get('epoch')}, head {sb.get('head')}) whose "
        f"follower follows A (link {link}, fsynced {sb.get('follower_fsynced') or '-'})")
    return sa


def refuse(a: Client, addr_a: str, addr_b: str, say: Say) -> int:
    """Step 2: ``REFUSE 0 B`` on A; the final id, fsynced.

    Raises:
        FailoverError: EXIT_REFUSE_FAILED.
    """
    try:
        final = a.refuse(addr_b)
    except errors.ConnectionLost as exc:
        raise FailoverError(
            EXIT_REFUSE_FAILED, f"REFUSE on A failed: {_describe(exc)}",
            "unknown: A may or may not be refusing (the connection was lost before its reply)",
            f"look with `logd stats -H {addr_a}` (role); `logd failover --abort --from {addr_a} "
            f"--to {addr_b}` returns it to primary, or run the failover again") from exc
    except errors.LogdError as exc:
        raise FailoverError(EXIT_REFUSE_FAILED, f"REFUSE on A failed: {_describe(exc)}",
                            "nothing was changed (A answered with an error)",
                            "fix what the error says (the admin token: $LOGD_ADMIN_TOKEN) "
                            "and retry") from exc
    say(f"[2/{STEPS}] refuse: A {addr_a} refuses writes, naming B {addr_b} as the new primary; "
        f"final id {final} (fsynced)")
    return final


def _refusing(addr_a: str, addr_b: str, final: int, extra: str = "") -> tuple[str, str]:
    state = (f"A {addr_a} is refusing writes (safe: no write is lost or forks); its final id is "
             f"{final}; B {addr_b} is still a read replica{extra}")
    next_ = (f"fix the cause and run `logd failover --from {addr_a} --to {addr_b}` again (it "
             f"goes on from a refusing A that names B), or give A its writes back: "
             f"`logd failover --abort --from {addr_a} --to {addr_b}`")
    return state, next_


def wait_caught_up(b: Client, addr_a: str, addr_b: str, final: int, deadline: float,
                   say: Say) -> None:
    """Step 3: until B's follower reports ``final`` fsynced.

    Raises:
        FailoverError: EXIT_NOT_CAUGHT_UP (A refusing).
    """
    started, last = time.monotonic(), {}
    while True:
        try:
            last = b.stats()
        except errors.LogdError as exc:
            last = {"error": _describe(exc)}
        got = fsynced_id(last)
        if got >= final:
            say(f"[3/{STEPS}] catch up: B has id {final} fsynced (follower_fsynced "
                f"{last.get('follower_fsynced')}, visible head {last.get('head')}) after "
                f"{time.monotonic() - started:.1f}s")
            return
        if time.monotonic() >= deadline:
            seen = (last["error"] if "error" in last else
                    f"follower_fsynced {last.get('follower_fsynced') or '-'}, link "
                    f"{last.get('link')}, status age {last.get('follower_status_age_seconds')}s")
            state, next_ = _refusing(addr_a, addr_b, final)
            raise FailoverError(EXIT_NOT_CAUGHT_UP,
                                f"B did not have id {final} fsynced within the timeout ({seen})",
                                state, next_)
        time.sleep(POLL)


def accept_when_fenced(b: Client, addr_a: str, addr_b: str, final: int, deadline: float,
                       say: Say) -> tuple[int, int]:
    """Steps 4 and 5: ACCEPT on B, retried while its follower holds the lock.
    Returns (epoch, first id).

    Raises:
        FailoverError: EXIT_NOT_FENCED (the lock stayed held), EXIT_ACCEPT_FAILED.
    """
    started, tries = time.monotonic(), 0
    while True:
        tries += 1
        try:
            epoch, first, _ = b.accept()
            break
        except errors.LogdError as exc:
            if not is_lock_error(exc):
                state, next_ = _refusing(addr_a, addr_b, final)
                raise FailoverError(EXIT_ACCEPT_FAILED, f"ACCEPT on B failed: {_describe(exc)}",
                                    state, next_) from exc
            if time.monotonic() >= deadline:
                state, next_ = _refusing(addr_a, addr_b, final, ", its follower still holding "
                                         "the directory")
                raise FailoverError(
                    EXIT_NOT_FENCED,
                    f"B's follower did not release the directory within the timeout ({tries} "
                    f"ACCEPTs refused: {exc.message}); it stops by itself only when started "
                    f"with --advertise {addr_b}", state,
                    next_ + f"; or stop B's follower yourself (it has id {final}) and run "
                    f"`logd accept -H {addr_b}`")
            time.sleep(POLL)
    waited = time.monotonic() - started
    refused = tries - 1
    say(f"[4/{STEPS}] fence: B's follower released the directory after {waited:.1f}s "
        f"({refused} ACCEPT{'' if refused == 1 else 's'} refused while it held the lock)")
    say(f"[5/{STEPS}] accept: B {addr_b} takes writes: epoch {epoch}, first id {first}")
    return epoch, first


def run(addr_a: str, addr_b: str, timeout: float = DEFAULT_TIMEOUT, dial: Dial = dial,
        say: Say = print) -> Outcome:
    """The planned failover from A to B.

    Raises:
        FailoverError: a step failed; its fields say what, the state and what next.
    """
    try:
        a = dial(addr_a)
    except errors.LogdError as exc:
        raise FailoverError(EXIT_UNREACHABLE, f"cannot reach A {addr_a}: {_describe(exc)}",
                            "nothing was changed", "start A or fix --from, then retry") from exc
    try:
        try:
            b = dial(addr_b)
        except errors.LogdError as exc:
            raise FailoverError(EXIT_UNREACHABLE, f"cannot reach B {addr_b}: {_describe(exc)}",
                                f"nothing was changed: A {addr_a} is still the primary",
                                "start B's read replica (logd serve --refuse) or fix --to, "
                                "then retry") from exc
        try:
            try:
                check(a, b, addr_a, addr_b, say)
            except errors.LogdError as exc:
                raise FailoverError(EXIT_UNREACHABLE, f"STATS failed: {_describe(exc)}",
                                    "nothing was changed", "retry") from exc
            final = refuse(a, addr_a, addr_b, say)
            deadline = time.monotonic() + timeout
            wait_caught_up(b, addr_a, addr_b, final, deadline, say)
            epoch, first = accept_when_fenced(b, addr_a, addr_b, final, deadline, say)
            head_a, head_b = _head(a), _head(b)
        finally:
            b.close()
    finally:
        a.close()
    # B's head when it accepted is first - 1 (its epoch begins at its next id);
    # writers redirected by A's refusals may have added to it since.
    say(f"[6/{STEPS}] done: the new primary is {addr_b}, epoch {epoch}; head ids: "
        f"A {addr_a} {head_a} (refusing, names B), B {addr_b} {first - 1} when it accepted "
        f"({head_b} now); A's final id was {final}")
    return Outcome(final, epoch, first, head_a, head_b)


def _head(client: Client) -> int:
    try:
        return client.head()
    except errors.LogdError:
        return -1


def abort(addr_a: str, addr_b: str | None, dial: Dial = dial, say: Say = print) -> int:
    """``--abort``: A takes writes again (ACCEPT, a new epoch on A), unless B was promoted.
    Returns A's epoch.

    Raises:
        FailoverError: EXIT_ABORT_REFUSED (B is a primary, or could not be asked),
            EXIT_UNREACHABLE (A cannot be reached), EXIT_ACCEPT_FAILED.
    """
    if addr_b:
        try:
            with dial(addr_b) as b:
                sb = b.stats()
        except errors.LogdError as exc:
            raise FailoverError(
                EXIT_ABORT_REFUSED, f"cannot ask B {addr_b} whether it was promoted: "
                f"{_describe(exc)}", "nothing was changed",
                f"make sure B is not a primary (logd stats -H {addr_b}), then abort without "
                "--to (it then does not check)") from exc
        if sb.get("role") != "replica":
            raise FailoverError(
                EXIT_ABORT_REFUSED, f"B {addr_b} was promoted (role {sb.get('role')!r}, epoch "
                f"{sb.get('epoch')}): giving A its writes back would make two primaries",
                "nothing was changed: B is the primary",
                f"send writes to B; make A follow it (logd-follower --primary {addr_b} over A's "
                "directory, once A is stopped)")
        say(f"abort: B {addr_b} is still a read replica (epoch {sb.get('epoch')}): not promoted")
    else:
        say("abort: --to not given: not checking that B was not promoted")
    try:
        with dial(addr_a) as a:
            epoch, first, changed = a.accept()
    except errors.ConnectionLost as exc:
        raise FailoverError(EXIT_UNREACHABLE, f"cannot reach A {addr_a}: {_describe(exc)}",
                            "nothing was changed", "start A or fix --from, then retry") from exc
    except errors.LogdError as exc:
        raise FailoverError(EXIT_ACCEPT_FAILED, f"ACCEPT on A failed: {_describe(exc)}",
                            "nothing was changed", "fix what the error says and retry") from exc
    if changed:
        say(f"abort: A {addr_a} takes writes again in a new epoch {epoch} (first id {first}); "
            "B's follower resumes from A (restart it if it stopped)")
    else:
        say(f"abort: A {addr_a} was already primary (epoch {epoch})")
    return epoch
