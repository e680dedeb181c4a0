"""SSH with libssh2 (ssh2-python) inside the gevent hub: sessions, host keys, auth, channels. Transport layer.

Everything is non-blocking, the TCP connect, handshake and authentication included: every
libssh2 call that answers EAGAIN is retried once the socket is ready in the direction
``session.block_directions()`` names, under one deadline. No thread pool, so nothing caps how
many hosts connect at once except ``HandshakeSlots``, which bounds concurrent handshakes
because every sshd drops unauthenticated connections past its ``MaxStartups``; a handshake
dropped that way is retried with backoff. Until authentication the session runs on a relay
(``ssh_relay.Wire``) that hands libssh2 the server's bytes in bounded slices, so a peer that
floods cannot hold the hub; the connection is spliced under libssh2 at the first channel.

An ``SSHLink`` is one authenticated session on one socket (through jump hosts if asked: the
session runs on a socketpair bridged to a ``direct-tcpip`` channel of a ``ssh_jump.Bastion``,
one login shared by every tunnel through the same hops). ``SSHPipe`` is a command's channel on
a link, with the byte-pipe interface that ``connection.py`` drives. Lifetimes are tied: the
channel is freed before its session, the session before its socket, a link before the bastion
it runs through, which closes with its last user.
"""

import os
import random
import resource
import socket
from typing import Optional

import gevent
import gevent.lock
import gevent.socket
from ssh2.session import LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC, Session

from chopsticks.errors import ConnectError, ConnectTimeout
from chopsticks import logs
from chopsticks.transports.libssh2 import (
    CLOSE_ERRORS, DROPPED, SSH2Error, Deadline, describe, failure, retry, translated,
)
from chopsticks.transports.ssh_auth import Credential, authenticate, verify_host_key
from chopsticks.transports.ssh_options import Destination
from chopsticks.transports.ssh_jump import Bastion, Bastions, Bridge
from chopsticks.transports.ssh_pipe import SSHPipe
from chopsticks.transports.ssh_proxy import CLOSE_GRACE, EXIT_WAIT, ProxyCommand
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
    """One authenticated SSH session on one socket (possibly through a shared jump host)."""

    def __init__(self, dest: Destination, session: Session, wire: Wire, credential: Credential,
                 parent: Optional[Bastion], under: "Under"):
        self.dest = dest
        # what another session to this host must present and see (``transports.libssh``):
        # a direct TCP connection only, not one through a jump host or a ProxyCommand
        self.credential = credential
        self.host_key: bytes = session.hostkey()[0]
        self.address = wire.sock.getpeername() if under.direct else None
        self.name = dest.name
        self.session = session
        self.wire = wire
        self.parent = parent
        self.under: Optional[Under] = under
        self.pipe: Optional[SSHPipe] = None
        if under.bridge is not None:
            under.bridge.link = self

    @property
    def sock(self) -> socket.socket:
        """The connection's socket, under libssh2's descriptor once the link carries a channel."""
        return self.wire.sock

    @classmethod
    def open(cls, dest: Destination, deadline: Deadline, bastions: Bastions) -> "SSHLink":
        """Connect, verify the host key and authenticate, through the bastion shared by every
        tunnel over ``dest.jumps`` (logged in to first if none is open).

        The caller holds a handshake slot: from the TCP connect to the end of authentication
        sshd counts the connection against its MaxStartups."""
        if not dest.jumps:
            return cls.open_hop(dest, None, deadline)
        bastion = bastions.acquire(dest.jumps, deadline)
        try:
            return cls.open_hop(dest, bastion, deadline)
        except BaseException:
            bastion.release()
            raise

    @classmethod
    def open_hop(cls, dest: Destination, parent: Optional[Bastion], deadline: Deadline) -> "SSHLink":
        """One login to ``dest``: directly, through its ProxyCommand, or on a channel of
        ``parent`` (which the link then holds: its ``close`` releases it; on failure the caller
        still does)."""
        attempt = 0
        while True:
            attempt += 1
            under = _connect(dest, parent, deadline)
            wire = Wire(under.sock, dest.name, under.where)
            session = Session()
            step = "the SSH handshake with " + under.where  # what an ssh2 error ends, for its message
            try:
                for method in (LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC):
                    session.method_pref(method, CIPHERS)
                session.set_blocking(False)
                retry(session, wire, deadline, dest.name, session.handshake, wire.fileno())
                step = "checking the host key of " + under.where
                verify_host_key(session, dest)
                step = "logging in as %s on %s" % (dest.user, under.where)
                credential = authenticate(session, wire, dest, deadline)
                # the next exchange (a channel open) waits for the server with the relay
                # drained: there the connection takes the socketpair's place
                wire.splice_when_drained = True
                return cls(dest, session, wire, credential, parent, under)
            except DROPPED as exc:
                del session  # libssh2's session is freed before its socket closes
                proxy = under.proxy
                # a ProxyCommand that ended is the reason, unless sshd said MaxStartups through it
                ended = proxy is not None and not wire.dropped_busy() and \
                    proxy.exit_status(min(EXIT_WAIT, max(0.0, deadline.remaining()))) is not None
                said = proxy.report() if proxy is not None else None
                under.close(wire, failed=True)
                if under.bridge is not None and under.bridge.lost is not None:
                    raise ConnectError("[%s] %s" % (dest.name, under.bridge.lost)) from exc
                if ended:
                    raise ConnectError("[%s] cannot reach %s: %s" % (dest.name, under.where, said)) from exc
                pause = min(MAX_BACKOFF, 0.05 * 2 ** min(attempt, 8)) * (0.5 + random.random())
                if deadline.remaining() <= pause:
                    raise ConnectError("[%s] the SSH handshake with %s:%d failed %d times, last: %s%s" % (
                        dest.name, dest.hostname, dest.port, attempt, describe(exc),
                        " (%s)" % said if said else "")) from exc
                gevent.sleep(pause)
            except BaseException as exc:
                del session
                said = under.proxy.report() if under.proxy is not None else None
                under.close(wire, failed=True)
                if under.bridge is not None and under.bridge.lost is not None:
                    raise ConnectError("[%s] %s" % (dest.name, under.bridge.lost)) from exc
                if isinstance(exc, SSH2Error):  # the boundary: said as the step it ended
                    error = failure(dest.name, step, exc)
                    raise (type(error)("%s (%s)" % (error, said)) if said else error) from exc
                if said and (isinstance(exc, ConnectTimeout) or type(exc) is ConnectError):
                    raise type(exc)("%s (%s)" % (exc, said)) from exc  # what the ProxyCommand did says why
                raise

    def open_channel(self, command: str, deadline: Deadline) -> "SSHPipe":
        with translated(self.name, "starting the agent's command on an SSH channel"):
            channel = retry(self.session, self.wire, deadline, self.name, self.session.open_session)
            retry(self.session, self.wire, deadline, self.name, channel.execute, command)
        self.pipe = SSHPipe(self, channel)
        return self.pipe

    def lose(self, reason: str) -> None:
        """The jump host under this link is gone: the pipe ends saying so, not as a bare EOF."""
        if self.pipe is not None and self.pipe.end_reason is None:
            self.pipe.end_reason = reason

    def close(self) -> None:
        """Free the session, then its socket, then release the bastion it ran through."""
        session, self.session = self.session, None
        if session is not None:
            try:
                retry(session, self.wire, Deadline(2.0, "disconnect"), self.name, session.disconnect)
            except CLOSE_ERRORS as exc:  # the session is freed all the same
                logs.event("ssh_close_failed", host=self.name, step="disconnect", error=describe(exc))
            del session  # the last reference: libssh2 frees it before the socket closes
            if self.under is not None:
                self.under.close(self.wire)
        self.pipe = self.under = None
        if self.parent is not None:
            self.parent.release()
            self.parent = None


class Under:
    """What carries a session's bytes: a TCP socket, a ProxyCommand, or a jump host's channel."""

    def __init__(self, sock: socket.socket, where: str, bridge: Optional[Bridge] = None,
                 proxy: Optional[ProxyCommand] = None):
        self.sock = sock
        self.where = where  # "HOST port N", for messages
        self.bridge = bridge
        self.proxy = proxy

    @property
    def direct(self) -> bool:
        return self.bridge is None and self.proxy is None

    def close(self, wire: Wire, failed: bool = False) -> None:
        """Close the wire on it, then it: a ProxyCommand may end on its own once its stdin
        closed, unless the connection ``failed``."""
        wire.close()
        if self.bridge is not None:
            self.bridge.close()
        if self.proxy is not None:
            self.proxy.close(grace=0.0 if failed else CLOSE_GRACE)


def _connect(dest: Destination, parent: Optional[Bastion], deadline: Deadline) -> Under:
    where = "%s port %d" % (dest.hostname, dest.port)
    if parent is not None:
        bridge = parent.connect(dest, deadline)
        return Under(bridge.near, where, bridge=bridge)
    if dest.proxy_command is not None:
        proxy = ProxyCommand(dest)
        return Under(proxy.sock, "%s (through its ProxyCommand)" % where, proxy=proxy)
    return Under(_tcp_connect(dest, deadline), where)


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
        return sock
    reason = os.strerror(last.errno) if isinstance(last, OSError) and last.errno else str(last)
    if isinstance(last, ConnectionRefusedError):
        reason = "connection refused (is sshd listening on port %d?)" % dest.port
    raise ConnectError("[%s] cannot connect to %s port %d: %s" % (dest.name, dest.hostname, dest.port, reason)) from last
