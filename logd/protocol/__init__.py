"""The logd wire protocol, with no sockets: bytes in, commands out; replies in,
bytes out. ``commands`` holds the requests (``CommandParser``), ``replies``
the replies (``ReplyParser``, the encoders); every public name of both is
here too, so ``from logd import protocol as p; p.CommandParser`` works.
"""

from .commands import *  # noqa: F401,F403
from .commands import __all__ as _commands
from .replies import *  # noqa: F401,F403
from .replies import __all__ as _replies

__all__ = [*_commands, *_replies]
