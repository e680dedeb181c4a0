"""Stands between a libssh2 session and its socket until the session is authenticated. Transport layer.

libssh2 reads its socket until the socket is empty inside one call: the byte-by-byte banner
read loops for as long as a peer streams junk, and key exchange loops in
``_libssh2_transport_read`` for as long as packets keep coming. A peer that floods bytes
would hold the gevent hub (every other host, the deadline, Ctrl-C) inside a single call.
So during the handshake and authentication libssh2 gets one end of a socketpair, and
``Relay`` moves bytes from the real socket into it in slices of at most ``SLICE`` bytes, and
only once libssh2 has consumed the previous slice: no call into libssh2 can see more than
that, and the deadline is checked between slices.

The relay also reads the server's identification line itself (RFC 4253 section 4.2: lines
before it are allowed and dropped here), so a peer that is not an SSH server is named as
such, and sshd's "Exceeded MaxStartups" is told apart from junk.

Once the session is authenticated and both directions are drained, ``splice`` puts the real
socket under libssh2's file descriptor number (``os.dup2``): steady-state traffic pays
nothing for the relay.
"""

import fcntl
import os
import socket
import struct
import termios
from typing import Optional

import gevent.socket
from ssh2.session import LIBSSH2_SESSION_BLOCK_INBOUND, LIBSSH2_SESSION_BLOCK_OUTBOUND, Session

from chopsticks.errors import ConnectError, ConnectTimeout
from chopsticks.transports.libssh2 import Deadline

# The most a libssh2 call can be handed at once. A key exchange is a few KiB; 16 KiB of junk
# costs libssh2's byte-by-byte banner read about 5 ms of CPU here.
SLICE = 16 << 10
# Bytes a server may send before its "SSH-" line. OpenSSH's client accepts more (1,024 lines);
# servers that print a notice first print a few lines.
MAX_PREAMBLE = 16 << 10
SHOWN = 64  # bytes of a non-SSH peer's output quoted in the error
# sshd's answer when it drops a connection past MaxStartups: a reason to retry, not junk.
DROPPED_NOTICE = b"MaxStartups"


class Dropped(EOFError):
    """The server closed the connection before identifying itself (sshd under load does)."""


def _pending(fd: int) -> int:
    """Bytes waiting to be read on ``fd``."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class Wire:
    """The socket under one libssh2 session: relayed in slices until ``splice``, direct after."""

    def __init__(self, sock: socket.socket, name: str, where: str):
        self.sock = sock  # the connection; after the splice, a socket object on libssh2's descriptor
        self.spare: Optional[socket.socket] = None  # the connection's original descriptor, after the splice
        self.name = name
        self.where = where  # "HOST port N", for messages
        self.inner, self.outer = socket.socketpair()  # never waited on: no watcher on them
        self.inner.setblocking(False)
        self.outer.setblocking(False)
        self.preamble = bytearray()  # what came before the identification line
        self.identified = False
        self.splice_when_drained = False  # set once the session is authenticated
        self.relaying = True

    def fileno(self) -> int:
        """The descriptor to give libssh2: the socketpair's end, which becomes the connection."""
        return self.inner.fileno()

    # -- what a libssh2 call that answered EAGAIN waits for -----------------------------------

    def step(self, session: Session, deadline: Deadline) -> None:
        """Wait until the call can progress: relaying, hand libssh2 at most one slice."""
        if not self.relaying:
            self._wait(session, deadline)
            return
        self.flush(deadline)
        if not session.block_directions() & LIBSSH2_SESSION_BLOCK_INBOUND or _pending(self.inner.fileno()):
            gevent.sleep(0)  # libssh2 has more to do before it needs the server
            return
        if self.splice_when_drained and self.drained():
            self._splice()
            self._wait(session, deadline)
            return
        data = self._receive(deadline)
        if not self.identified:
            data = self._identify(data)
        self.outer.sendall(data)  # libssh2 has read everything before: the pair has room

    def _wait(self, session: Session, deadline: Deadline) -> None:
        left = deadline.remaining()
        if left <= 0:
            raise self._timeout(deadline)
        try:
            if session.block_directions() == LIBSSH2_SESSION_BLOCK_OUTBOUND:
                gevent.socket.wait_write(self.sock.fileno(), timeout=left)
            else:
                gevent.socket.wait_read(self.sock.fileno(), timeout=left)
        except socket.timeout as exc:
            raise self._timeout(deadline) from exc

    def flush(self, deadline: Deadline) -> None:
        """Send everything libssh2 has written into the pair on to the connection."""
        while self.relaying:
            try:
                data = self.outer.recv(SLICE)
            except BlockingIOError:
                return
            if not data:
                return
            self.sock.settimeout(max(0.001, deadline.remaining()))
            try:
                self.sock.sendall(data)
            except socket.timeout as exc:
                raise self._timeout(deadline) from exc
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise self._closed_early() from exc
            finally:
                self.sock.settimeout(None)

    def _receive(self, deadline: Deadline) -> bytes:
        left = deadline.remaining()
        if left <= 0:
            raise self._timeout(deadline)
        try:
            gevent.socket.wait_read(self.sock.fileno(), timeout=left)
        except socket.timeout as exc:
            raise self._timeout(deadline) from exc
        try:
            data = self.sock.recv(SLICE)
        except BlockingIOError:
            return b""
        if data:
            return data
        if not self.identified:
            if not self.preamble or DROPPED_NOTICE in self.preamble:
                raise Dropped("the server closed the connection before identifying itself")
            raise self._not_ssh("and closed the connection")
        raise ConnectionResetError("the server closed the connection during the SSH handshake")

    def _closed_early(self) -> BaseException:
        """The server closed while we were sending (a command that printed and exited, a peer
        that is not SSH): what it sent before says why, as when a read meets the end."""
        if not self.identified:
            try:
                data = os.read(self.sock.fileno(), MAX_PREAMBLE)
            except OSError:
                data = b""
            try:
                self._identify(data)
            except ConnectError as exc:
                return exc
            if not self.identified:
                if not self.preamble or DROPPED_NOTICE in self.preamble:
                    return Dropped("the server closed the connection before identifying itself")
                return self._not_ssh("and closed the connection")
        return ConnectionResetError("the server closed the connection during the SSH handshake")

    def _identify(self, data: bytes) -> bytes:
        """Hold back the server's bytes until its "SSH-" line; from there on they go to libssh2."""
        self.preamble += data
        start = 0
        while True:
            end = self.preamble.find(b"\n", start)
            line = self.preamble[start:] if end < 0 else self.preamble[start:end + 1]
            if line.startswith(b"SSH-"):
                self.identified = True
                rest = bytes(self.preamble[start:])
                del self.preamble[start:]
                return rest
            if b"\0" in line or self.preamble.startswith(b"HTTP/") or start + len(line) > MAX_PREAMBLE:
                raise self._not_ssh("")
            if end < 0:
                return b""
            start = end + 1

    def _not_ssh(self, how: str) -> ConnectError:
        hint = " (it looks like an HTTP server)" if self.preamble.startswith(b"HTTP/") else ""
        return ConnectError("[%s] %s is not an SSH server: it sent %s%s%s" % (
            self.name, self.where, _quote(self.preamble), " " + how if how else "", hint))

    def _timeout(self, deadline: Deadline) -> ConnectTimeout:
        said = "" if self.identified or not self.preamble else \
            " (the server sent %s and no SSH identification)" % _quote(self.preamble)
        return ConnectTimeout("[%s] %s did not finish within %ss%s" % (
            self.name, deadline.what, deadline.seconds, said))

    def dropped_busy(self) -> bool:
        """Whether the server said, before closing, that it was too busy (sshd's MaxStartups)."""
        return DROPPED_NOTICE in self.preamble

    # -- the end of the relay ---------------------------------------------------------------

    def drained(self) -> bool:
        """Whether libssh2 has read everything handed to it and everything it wrote was sent."""
        return not _pending(self.inner.fileno()) and not _pending(self.outer.fileno())

    def end_relay(self) -> None:
        """Splice now, for an authenticated session whose driver watches the connection itself
        (a shared jump host): libssh2 has read all it was handed, and sent all it wrote."""
        if self.relaying:
            if not self.drained():
                raise ConnectError("[%s] %s sent more than its login answer before the session "
                                   "was used" % (self.name, self.where))
            self._splice()

    def _splice(self) -> None:
        """Put the connection under libssh2's descriptor; from now on the relay costs nothing.

        The original descriptor stays open (``spare``) until the wire closes: gevent's epoll
        may still have it registered, and drops it cleanly only while it refers to the same
        connection."""
        fd = self.inner.fileno()
        os.dup2(self.sock.fileno(), fd)
        self.inner.detach()
        self.outer.close()
        self.spare, self.sock = self.sock, gevent.socket.socket(fileno=fd)
        self.relaying = False

    def close(self) -> None:
        for sock in (self.sock, self.spare, self.inner, self.outer):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


def _quote(data: bytearray) -> str:
    """The first bytes a peer sent, quoted and bounded."""
    return repr(bytes(data[:SHOWN]))[1:] + ("..." if len(data) > SHOWN else "")
