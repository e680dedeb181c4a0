"""The EAGAIN loop: libssh2 calls on a non-blocking session, inside the gevent hub. Transport layer.

Every libssh2 call that answers EAGAIN is retried once the socket is ready in the direction
``session.block_directions()`` names, under one ``Deadline``. Shared by the SSH link, its
authentication and its channel pipes.
"""

import socket
import time
from typing import Callable

import gevent.socket
from ssh2 import exceptions as ssh2_errors
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import LIBSSH2_SESSION_BLOCK_INBOUND, LIBSSH2_SESSION_BLOCK_OUTBOUND, Session

from chopsticks.errors import ConnectTimeout

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


def _wait(session: Session, sock: socket.socket, deadline: Deadline, name: str) -> None:
    directions = session.block_directions()
    left = deadline.remaining()
    if left <= 0:
        raise ConnectTimeout("[%s] %s did not finish within %ss" % (name, deadline.what, deadline.seconds))
    if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND and not directions & LIBSSH2_SESSION_BLOCK_INBOUND:
        gevent.socket.wait_write(sock.fileno(), timeout=left)
    else:
        gevent.socket.wait_read(sock.fileno(), timeout=left)


def retry(session: Session, sock: socket.socket, deadline: Deadline, name: str, fn: Callable, *args):
    """Call a libssh2 function until it stops answering EAGAIN, waiting on the socket between."""
    while True:
        try:
            rc = fn(*args)
        except gevent.socket.timeout:
            raise ConnectTimeout("[%s] %s did not finish within %ss" % (name, deadline.what, deadline.seconds))
        if rc == LIBSSH2_ERROR_EAGAIN or (rc is None and session.last_errno() == LIBSSH2_ERROR_EAGAIN):
            try:
                _wait(session, sock, deadline, name)
            except gevent.socket.timeout:
                raise ConnectTimeout("[%s] %s did not finish within %ss" % (name, deadline.what, deadline.seconds))
            continue
        return rc


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return "%s%s" % (type(exc).__name__, (": " + text) if text else "")
