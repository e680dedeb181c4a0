"""The EAGAIN loop: libssh2 calls on a non-blocking session, inside the gevent hub. Transport layer.

Every libssh2 call that answers EAGAIN is retried once its wire (``ssh_relay.Wire``) says it
can progress: the socket is ready in the direction ``session.block_directions()`` names, or,
during the handshake, the relay has handed libssh2 the next slice of the server's bytes; all
under one ``Deadline``. Shared by the SSH link, its authentication and its channel pipes.
"""

import time
from typing import Callable, Protocol

from ssh2 import exceptions as ssh2_errors
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import Session

READ_SIZE = 65536
# Errors that mean the connection under a session is gone.
EOF_ERRORS = (ssh2_errors.SocketDisconnectError, ssh2_errors.SocketRecvError,
              ssh2_errors.SocketSendError, ssh2_errors.ChannelClosedError, ssh2_errors.ChannelEOFSentError)


class Deadline:
    """A point in time, and what it bounds (for the message when it passes)."""

    def __init__(self, seconds: float, what: str):
        self.at = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def remaining(self) -> float:
        return self.at - time.monotonic()


class Waiter(Protocol):
    """What a session's socket offers the EAGAIN loop (``ssh_relay.Wire``)."""

    def step(self, session: Session, deadline: Deadline) -> None:
        """Wait (or relay) until the call that answered EAGAIN can progress; raise past the deadline."""

    def flush(self, deadline: Deadline) -> None:
        """Send on whatever the call wrote and holds back."""


def retry(session: Session, wire: Waiter, deadline: Deadline, name: str, fn: Callable, *args):
    """Call a libssh2 function until it stops answering EAGAIN, waiting on the wire between."""
    while True:
        rc = fn(*args)
        if rc == LIBSSH2_ERROR_EAGAIN or (rc is None and session.last_errno() == LIBSSH2_ERROR_EAGAIN):
            wire.step(session, deadline)
            continue
        wire.flush(deadline)
        return rc


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return "%s%s" % (type(exc).__name__, (": " + text) if text else "")
