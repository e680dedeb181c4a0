"""The EAGAIN loop: libssh2 calls on a non-blocking session, inside the gevent hub. Transport layer.

Every libssh2 call that answers EAGAIN is retried once its wire (``ssh_relay.Wire``) says it
can progress: the socket is ready in the direction ``session.block_directions()`` names, or,
during the handshake, the relay has handed libssh2 the next slice of the server's bytes; all
under one ``Deadline``. Shared by the SSH link, its authentication and its channel pipes.
"""

import contextlib
import time
from typing import Callable, Iterator, Protocol

from ssh2 import exceptions as ssh2_errors
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import Session

from chopsticks.errors import ConnectError

READ_SIZE = 65536

# -- what ssh2's exceptions mean: the one module that names them -------------------------------
# Every libssh2 failure, and the base that ``translated`` maps to a chopsticks error.
SSH2Error = ssh2_errors.SSH2Error
# The connection under a session is gone.
LOST = (ssh2_errors.SocketDisconnectError, ssh2_errors.SocketRecvError,
        ssh2_errors.SocketSendError, ssh2_errors.ChannelClosedError, ssh2_errors.ChannelEOFSentError)
# sshd dropped the connection before authentication (MaxStartups, load): worth another try.
DROPPED = (ssh2_errors.SocketDisconnectError, ssh2_errors.SocketRecvError, ssh2_errors.BannerRecvError,
           ssh2_errors.KeyExchangeError, ssh2_errors.SessionHandshakeError, ConnectionResetError, EOFError)
# The server refused a credential; the login goes on with the next one, an ssh-agent identity
# included (OpenSSH tries each agent key in turn too, also after one fails to sign).
REFUSED = (ssh2_errors.AuthenticationError, ssh2_errors.PublicKeyError, ssh2_errors.PublickeyUnverifiedError,
           ssh2_errors.PasswordExpiredError, ssh2_errors.AgentAuthenticationError)
# libssh2 cannot load a key file (a wrong passphrase, a format it does not read).
UNREADABLE_KEY = ssh2_errors.FileError
# The server refused a channel request: it answered all the same.
DENIED = ssh2_errors.ChannelRequestDenied
# A channel that ended on its own (the far host hung up): its session lives on.
CHANNEL_ENDED = (ssh2_errors.ChannelClosedError, ssh2_errors.ChannelEOFSentError)
# A channel the server would not open (a jump host's forward refused or failed): only that one.
CHANNEL_REFUSED = CHANNEL_ENDED + (ssh2_errors.ChannelFailure, ssh2_errors.ChannelUnknownError)
# What a close path may meet on a session or channel that is already failing: a libssh2
# error, the socket's, or the deadline of the exchange (a ConnectTimeout); nothing else.
CLOSE_ERRORS = (SSH2Error, OSError, EOFError, ConnectError)


def reason(exc: BaseException) -> str:
    """What an ssh2 exception says happened to a started channel, in words for an error message."""
    if isinstance(exc, LOST):
        return "the SSH connection was lost (%s)" % describe(exc)
    return "the SSH channel failed (%s)" % describe(exc)


def failure(name: str, step: str, exc: BaseException) -> ConnectError:
    """The error for an ssh2 exception that ended ``step`` (what was being done, said so that
    "failed" follows it: "the SSH handshake with web-1 port 22")."""
    cause = reason(exc) if isinstance(exc, LOST) else describe(exc)
    return ConnectError("[%s] %s failed: %s" % (name, step, cause))


@contextlib.contextmanager
def translated(name: str, step: str) -> Iterator[None]:
    """The boundary of the SSH transport: an ssh2 exception that escapes ``step`` leaves as a
    ``ConnectError`` saying that step failed (chained to it), never as a foreign exception the
    caller cannot catch."""
    try:
        yield
    except SSH2Error as exc:
        raise failure(name, step, exc) from exc


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
