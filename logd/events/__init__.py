"""Where gevent meets application logic: the ordered queue, the handlers and
the commit source (STYLE.md section 3). The admin policy is pure and the
settings table parses it, so it is ``logd/admin.py``, beside ``config.py``."""

from .commit import Commits
from .handlers import CloseAfter, Handlers, Peer, Reply, Stream, WaitCommit
from .queue import EventQueue

__all__ = ["CloseAfter", "Commits", "EventQueue", "Handlers", "Peer", "Reply", "Stream", "WaitCommit"]
