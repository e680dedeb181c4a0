"""SSH with libssh2 (ssh2-python) inside the gevent hub: sessions, host keys, auth, channels. Transport layer.

Everything is non-blocking, the TCP connect, handshake and authentication included: every
libssh2 call that answers EAGAIN is retried once the socket is ready in the direction
``session.block_directions()`` names, under one deadline. No thread pool, so nothing caps how
many hosts connect at once except ``HandshakeSlots``, which bounds concurrent handshakes
because every sshd drops unauthenticated connections past its ``MaxStartups``; a handshake
dropped that way is retried with backoff. Until authentication the session runs on a relay
(``ssh_relay.Wire``) that hands libssh2 the server's bytes in bounded slices, so a peer that
floods cannot hold the hub; the connection is spliced under libssh2 at the first channel.

An ``SSHLink`` is one authenticated session on one socket (through a chain of jump hosts if
asked: each hop's ``direct-tcpip`` channel is bridged to a socketpair the next session runs
on). ``SSHPipe`` is a command's channel on a link, with the byte-pipe interface that
``connection.py`` drives. Lifetimes are tied: the channel is freed before its session, the
session before its socket, inner hops before outer ones.
"""

import os
import random
import resource
import socket
from typing import Optional

import gevent
import gevent.lock
import gevent.queue
import gevent.select
import gevent.socket
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import (
    LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC, LIBSSH2_SESSION_BLOCK_OUTBOUND, Session,
)

from chopsticks.errors import ConnectError, ConnectTimeout
from chopsticks import logs
from chopsticks.transports.libssh2 import (
    CLOSE_ERRORS, DROPPED, READ_SIZE, SSH2Error, Deadline, describe, failure, retry, translated,
)
from chopsticks.transports.ssh_auth import authenticate, verify_host_key
from chopsticks.transports.ssh_options import Destination
from chopsticks.transports.ssh_pipe import SSHPipe
from chopsticks.transports.ssh_relay import Wire

# Bounds concurrent SSH handshakes from this process. Tuned on the loopback fleet: 64 keeps
# the controller's CPU busy without tripping sshd's MaxStartups on a default-configured host
# more than the retries absorb.
DEFAULT_HANDSHAKE_SLOTS = 64
# Ciphers, most preferred first. libssh2's chacha20-poly1305 is its own portable C code
# (about 60 MiB/s here, all of a core: it capped file pushes); AES-GCM and AES-CTR run in
# OpenSSL with the CPU's AES instructions. Servers offering none of these still get chacha.
CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr,"
           "chacha20-poly1305@openssh.com,aes192-ctr")
# A handshake that sshd drops (MaxStartups) is retried until the connect deadline, after a
# randomised, doubling pause capped here.
MAX_BACKOFF = 2.0


class HandshakeSlots:
    """A bound on concurrent SSH handshakes, shared by the tunnels that use it."""

    def __init__(self, limit: int = DEFAULT_HANDSHAKE_SLOTS):
        if limit < 1:
            raise ValueError("handshake slots must be at least 1")
        self.limit = limit
        self._semaphore = gevent.lock.BoundedSemaphore(limit)

    def __enter__(self):
        self._semaphore.acquire()

    def __exit__(self, *exc_info):
        self._semaphore.release()


_shared_slots: Optional[HandshakeSlots] = None


def default_slots() -> HandshakeSlots:
    """The process-wide handshake bound, created on first use (not at import)."""
    global _shared_slots
    if _shared_slots is None:
        _shared_slots = HandshakeSlots()
        raise_open_files_limit()
    return _shared_slots


def raise_open_files_limit() -> int:
    """Raise the soft open-files limit to the hard limit: a fleet needs a socket per host."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


class SSHLink:
    """One authenticated SSH session on one socket (possibly through jump hosts)."""

    def __init__(self, dest: Destination, session: Session, wire: Wire,
                 parent: Optional["SSHLink"] = None, bridge: Optional["_Bridge"] = None):
        self.dest = dest
        self.name = dest.name
        self.session = session
        self.wire = wire
        self.parent = parent
        self.bridge = bridge

    @property
    def sock(self) -> socket.socket:
        """The connection's socket, under libssh2's descriptor once the link carries a channel."""
        return self.wire.sock

    @classmethod
    def open(cls, dest: Destination, deadline: Deadline) -> "SSHLink":
        """Connect, verify the host key and authenticate, hop by hop through ``dest.jumps``.

        The caller holds a handshake slot: from the TCP connect to the end of authentication
        sshd counts the connection against its MaxStartups."""
        parent: Optional[SSHLink] = None
        try:
            for hop in list(dest.jumps) + [dest]:
                parent = cls._open_hop(hop, parent, deadline)
        except BaseException:
            if parent is not None:
                parent.close()
            raise
        assert parent is not None
        return parent

    @classmethod
    def _open_hop(cls, dest: Destination, parent: Optional["SSHLink"], deadline: Deadline) -> "SSHLink":
        attempt = 0
        while True:
            attempt += 1
            sock, bridge = (_tcp_connect(dest, deadline) if parent is None
                            else _Bridge.open(parent, dest, deadline))
            where = "%s port %d" % (dest.hostname, dest.port)
            wire = Wire(sock, dest.name, where)
            session = Session()
            step = "the SSH handshake with " + where  # what an ssh2 error ends, for its message
            try:
                for method in (LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC):
                    session.method_pref(method, CIPHERS)
                session.set_blocking(False)
                retry(session, wire, deadline, dest.name, session.handshake, wire.fileno())
                step = "checking the host key of " + where
                verify_host_key(session, dest)
                step = "logging in as %s on %s" % (dest.user, where)
                authenticate(session, wire, dest, deadline)
                # the next exchange (a channel open) waits for the server with the relay
                # drained: there the connection takes the socketpair's place
                wire.splice_when_drained = True
                return cls(dest, session, wire, parent, bridge)
            except DROPPED as exc:
                del session  # libssh2's session is freed before its socket closes
                _close(wire, bridge)
                pause = min(MAX_BACKOFF, 0.05 * 2 ** min(attempt, 8)) * (0.5 + random.random())
                if deadline.remaining() <= pause:
                    raise ConnectError("[%s] the SSH handshake with %s:%d failed %d times, last: %s" % (
                        dest.name, dest.hostname, dest.port, attempt, describe(exc))) from exc
                gevent.sleep(pause)
            except BaseException as exc:
                del session
                _close(wire, bridge)
                if isinstance(exc, SSH2Error):  # the boundary: said as the step it ended
                    raise failure(dest.name, step, exc) from exc
                raise

    def open_channel(self, command: str, deadline: Deadline) -> "SSHPipe":
        with translated(self.name, "starting the agent's command on an SSH channel"):
            channel = retry(self.session, self.wire, deadline, self.name, self.session.open_session)
            retry(self.session, self.wire, deadline, self.name, channel.execute, command)
        return SSHPipe(self, channel)

    def close(self) -> None:
        """Free the session, then its socket, then the hops it ran through."""
        session, self.session = self.session, None
        if session is not None:
            try:
                retry(session, self.wire, Deadline(2.0, "disconnect"), self.name, session.disconnect)
            except CLOSE_ERRORS as exc:  # the session is freed all the same
                logs.event("ssh_close_failed", host=self.name, step="disconnect", error=describe(exc))
            del session  # the last reference: libssh2 frees it before the socket closes
            _close(self.wire, self.bridge)
        if self.parent is not None:
            self.parent.close()
            self.parent = None


def _close(wire: Wire, bridge: Optional["_Bridge"]) -> None:
    wire.close()
    if bridge is not None:
        bridge.close()


def _tcp_connect(dest: Destination, deadline: Deadline):
    try:
        addresses = gevent.socket.getaddrinfo(dest.hostname, dest.port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError("[%s] cannot resolve host name %r: %s" % (dest.name, dest.hostname, exc.strerror)) from exc
    last: Optional[BaseException] = None
    for family, kind, proto, _, address in addresses:
        sock = gevent.socket.socket(family, kind, proto)
        sock.settimeout(max(0.001, min(deadline.remaining(), dest.connect_timeout)))
        try:
            sock.connect(address)
        except gevent.socket.timeout as exc:
            sock.close()
            raise ConnectTimeout("[%s] connecting to %s port %d timed out after %ss" % (
                dest.name, dest.hostname, dest.port, dest.connect_timeout)) from exc
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.settimeout(None)
        # libssh2 does not set it; without it every small exchange waits ~40 ms (Nagle
        # against delayed ACK).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, None
    reason = os.strerror(last.errno) if isinstance(last, OSError) and last.errno else str(last)
    if isinstance(last, ConnectionRefusedError):
        reason = "connection refused (is sshd listening on port %d?)" % dest.port
    raise ConnectError("[%s] cannot connect to %s port %d: %s" % (dest.name, dest.hostname, dest.port, reason)) from last


class _Bridge:
    """Carries a jump host's direct-tcpip channel over a socketpair, for the next session."""

    def __init__(self, parent: SSHLink, channel, near: socket.socket, far: socket.socket):
        self.parent = parent
        self.channel = channel
        self.near = near  # given to the next hop's libssh2 session
        self.far = far  # pumped to and from the channel
        self.pump = gevent.spawn(self._pump)

    @classmethod
    def open(cls, parent: SSHLink, dest: Destination, deadline: Deadline):
        with translated(dest.name, "asking jump host %s to connect to %s port %d"
                        % (parent.dest.hostname, dest.hostname, dest.port)):
            channel = retry(parent.session, parent.wire, deadline, parent.name, parent.session.direct_tcpip_ex,
                            dest.hostname, dest.port, "127.0.0.1", 0)
        near, far = gevent.socket.socketpair()
        bridge = cls(parent, channel, near, far)
        return near, bridge

    def _pump(self) -> None:
        sock, far_fd = self.parent.sock, self.far.fileno()
        pending = b""
        try:
            while True:
                progressed = False
                size, data = self.channel.read(READ_SIZE)
                if size > 0:
                    self.far.sendall(data)  # cooperative: waits while the next session is slow
                    progressed = True
                elif size != LIBSSH2_ERROR_EAGAIN and self.channel.eof():
                    return
                if not pending:
                    try:
                        # gevent keeps the fd non-blocking underneath; read it raw so that an
                        # empty socket answers at once instead of waiting
                        pending = os.read(far_fd, READ_SIZE)
                        if not pending:
                            return
                    except BlockingIOError:
                        pass
                if pending:
                    rc, written = self.channel.write(pending)
                    if rc != LIBSSH2_ERROR_EAGAIN and written > 0:
                        pending = pending[written:]
                        progressed = True
                if not progressed:
                    outbound = self.parent.session.block_directions() & LIBSSH2_SESSION_BLOCK_OUTBOUND
                    # libssh2 may also hold data it read while writing: the timeout bounds that.
                    gevent.select.select([sock, self.far], [sock] if outbound else [], [], 0.2)
        except (OSError, SSH2Error):  # either side ended: the next session sees its socket close
            return
        finally:
            self.far.close()

    def close(self) -> None:
        self.pump.kill()
        self.channel = None
        try:
            self.far.close()
        except OSError:
            pass


