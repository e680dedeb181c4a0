"""SSH with libssh2 (ssh2-python) inside the gevent hub: sessions, host keys, auth, channels. Transport layer.

Everything is non-blocking, the TCP connect, handshake and authentication included: every
libssh2 call that answers EAGAIN is retried once the socket is ready in the direction
``session.block_directions()`` names, under one deadline. No thread pool, so nothing caps how
many hosts connect at once except ``HandshakeSlots``, which bounds concurrent handshakes
because every sshd drops unauthenticated connections past its ``MaxStartups``; a handshake
dropped that way is retried with backoff.

An ``SSHLink`` is one authenticated session on one socket (through a chain of jump hosts if
asked: each hop's ``direct-tcpip`` channel is bridged to a socketpair the next session runs
on). ``SSHPipe`` is a command's channel on a link, with the byte-pipe interface that
``connection.py`` drives. Lifetimes are tied: the channel is freed before its session, the
session before its socket, inner hops before outer ones.
"""

import errno
import os
import random
import resource
import signal
import socket
import time
from typing import Callable, List, Optional

import gevent
import gevent.lock
import gevent.queue
import gevent.select
import gevent.socket
from gevent.hub import get_hub
from ssh2 import exceptions as ssh2_errors
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import LIBSSH2_SESSION_BLOCK_INBOUND, LIBSSH2_SESSION_BLOCK_OUTBOUND, Session

from chopsticks import known_hosts
from chopsticks.errors import (
    AuthenticationFailed, ConnectError, ConnectTimeout, HostKeyChanged, HostKeyError, UnknownHostKey,
)
from chopsticks.transports.ssh_options import Destination

READ_SIZE = 65536
# Bounds concurrent SSH handshakes from this process. Tuned on the loopback fleet: 64 keeps
# the controller's CPU busy without tripping sshd's MaxStartups on a default-configured host
# more than the retries absorb.
DEFAULT_HANDSHAKE_SLOTS = 64
# A handshake that sshd drops (MaxStartups) is retried until the connect deadline, after a
# randomised, doubling pause capped here.
MAX_BACKOFF = 2.0
_EOF_ERRORS = (ssh2_errors.SocketDisconnectError, ssh2_errors.SocketRecvError,
               ssh2_errors.SocketSendError, ssh2_errors.ChannelClosedError, ssh2_errors.ChannelEOFSentError)
# Errors that mean sshd dropped the connection before authentication (MaxStartups, load).
_DROPPED = (ssh2_errors.SocketDisconnectError, ssh2_errors.SocketRecvError, ssh2_errors.BannerRecvError,
            ssh2_errors.KeyExchangeError, ssh2_errors.SessionHandshakeError, ConnectionResetError, EOFError)


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


class Deadline:
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


class SSHLink:
    """One authenticated SSH session on one socket (possibly through jump hosts)."""

    def __init__(self, name: str, session: Session, sock: socket.socket,
                 parent: Optional["SSHLink"] = None, bridge: Optional["_Bridge"] = None):
        self.name = name
        self.session = session
        self.sock = sock
        self.parent = parent
        self.bridge = bridge

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
            session = Session()
            try:
                session.set_blocking(False)
                retry(session, sock, deadline, dest.name, session.handshake, sock)
                _verify_host_key(session, dest)
                _authenticate(session, sock, dest, deadline)
                return cls(dest.name, session, sock, parent, bridge)
            except _DROPPED as exc:
                del session  # libssh2's session is freed before its socket closes
                _close(sock, bridge)
                pause = min(MAX_BACKOFF, 0.05 * 2 ** min(attempt, 8)) * (0.5 + random.random())
                if deadline.remaining() <= pause:
                    raise ConnectError("[%s] the SSH handshake with %s:%d failed %d times, last: %s" % (
                        dest.name, dest.hostname, dest.port, attempt, _describe(exc))) from exc
                gevent.sleep(pause)
            except BaseException:
                del session
                _close(sock, bridge)
                raise

    def open_channel(self, command: str, deadline: Deadline) -> "SSHPipe":
        channel = retry(self.session, self.sock, deadline, self.name, self.session.open_session)
        retry(self.session, self.sock, deadline, self.name, channel.execute, command)
        return SSHPipe(self, channel)

    def close(self) -> None:
        """Free the session, then its socket, then the hops it ran through."""
        session, self.session = self.session, None
        if session is not None:
            try:
                retry(session, self.sock, Deadline(2.0, "disconnect"), self.name, session.disconnect)
            except Exception:
                pass
            del session  # the last reference: libssh2 frees it before the socket closes
            _close(self.sock, self.bridge)
        if self.parent is not None:
            self.parent.close()
            self.parent = None


def _close(sock: socket.socket, bridge: Optional["_Bridge"]) -> None:
    try:
        sock.close()
    except OSError:
        pass
    if bridge is not None:
        bridge.close()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return "%s%s" % (type(exc).__name__, (": " + text) if text else "")


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


def _verify_host_key(session: Session, dest: Destination) -> None:
    key, _ = session.hostkey()
    policy = dest.host_key_policy
    if policy == "off":
        return
    entries = known_hosts.read(dest.known_hosts)
    outcome = known_hosts.check(entries, dest.hostname, dest.port, key)
    if outcome == known_hosts.MATCH:
        return
    shown = known_hosts.host_name(dest.hostname, dest.port)
    if outcome == known_hosts.REVOKED:
        raise HostKeyError("[%s] the host key of %s (%s) is marked @revoked in known_hosts" % (
            dest.name, shown, known_hosts.fingerprint(key)))
    if outcome == known_hosts.CHANGED:
        raise HostKeyChanged(
            "[%s] THE HOST KEY OF %s HAS CHANGED: it now presents %s %s, which does not match the key "
            "recorded in %s. Someone could be intercepting the connection, or the host was reinstalled; "
            "if the new key is right, remove the old line from known_hosts." % (
                dest.name, shown, known_hosts.key_type_of(key), known_hosts.fingerprint(key),
                " or ".join(dest.known_hosts)))
    if policy == "accept-new" and dest.known_hosts:
        known_hosts.append(dest.known_hosts[0], dest.hostname, dest.port, key)
        return
    raise UnknownHostKey(
        "[%s] the host key of %s (%s %s) is not in %s and the host key policy is strict; add it "
        "(ssh-keyscan), or use host_key_policy='accept-new'" % (
            dest.name, shown, known_hosts.key_type_of(key), known_hosts.fingerprint(key),
            " or ".join(dest.known_hosts) or "any known_hosts file"))


def _authenticate(session: Session, sock: socket.socket, dest: Destination, deadline: Deadline) -> None:
    tried: List[str] = []
    for key in dest.keys:
        if not os.path.isfile(key):
            if key in dest.explicit_keys:
                raise AuthenticationFailed("[%s] the key file %s does not exist" % (dest.name, key))
            continue
        try:
            retry(session, sock, deadline, dest.name, session.userauth_publickey_fromfile,
                  dest.user, key, dest.passphrase or "")
            return
        except ssh2_errors.FileError as exc:
            raise AuthenticationFailed("[%s] cannot use the key %s: wrong passphrase, or not a private key "
                                       "libssh2 reads (%s)" % (dest.name, key, _describe(exc))) from exc
        except (ssh2_errors.AuthenticationError, ssh2_errors.PublicKeyError,
                ssh2_errors.PublickeyUnverifiedError):
            tried.append("key " + key)
    if dest.agent and os.environ.get("SSH_AUTH_SOCK"):
        if _agent_auth(session, sock, dest, deadline):
            return
        tried.append("ssh-agent")
    if dest.password is not None:
        try:
            retry(session, sock, deadline, dest.name, session.userauth_password, dest.user, dest.password)
            return
        except (ssh2_errors.AuthenticationError, ssh2_errors.PasswordExpiredError):
            tried.append("password")
    raise AuthenticationFailed("[%s] %s@%s refused every credential tried: %s" % (
        dest.name, dest.user, dest.hostname, ", ".join(tried) or "none were given or found"))


def _agent_auth(session: Session, sock: socket.socket, dest: Destination, deadline: Deadline) -> bool:
    try:
        agent = session.agent_init()
        agent.connect()
    except ssh2_errors.SSH2Error:
        return False
    try:
        for identity in agent.get_identities():
            try:
                retry(session, sock, deadline, dest.name, agent.userauth, dest.user, identity)
                return True
            except (ssh2_errors.AgentAuthenticationError, ssh2_errors.AuthenticationError):
                continue
    except ssh2_errors.SSH2Error:
        return False
    finally:
        try:
            agent.disconnect()
        except ssh2_errors.SSH2Error:
            pass
    return False


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
        channel = retry(parent.session, parent.sock, deadline, parent.name, parent.session.direct_tcpip_ex,
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
        except (OSError, ssh2_errors.SSH2Error):
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


class SSHPipe:
    """A remote command's channel as a byte pipe: stdout by callback, stderr by greenlet reads."""

    def __init__(self, link: SSHLink, channel):
        self.link = link
        self.channel = channel
        self.name = link.name
        self.end_reason: Optional[str] = None
        self._callback: Optional[Callable[[bytes], None]] = None
        self._stderr: gevent.queue.Queue = gevent.queue.Queue()
        self._watcher = get_hub().loop.io(link.sock.fileno(), 1)
        self._draining = False
        self._stdout_done = False
        self._stderr_done = False
        self._closed = False

    pid = None

    # -- reading -----------------------------------------------------------------------------

    def start_reading(self, callback: Callable[[bytes], None]) -> None:
        self._callback = callback
        self._watcher.start(self._drain)
        get_hub().loop.run_callback(self._drain)  # what libssh2 may already hold

    def stop_reading(self) -> None:
        self._watcher.stop()

    def _end(self, reason: Optional[str]) -> None:
        if reason and self.end_reason is None:
            self.end_reason = reason
        if not self._stdout_done:
            self._stdout_done = True
            self._watcher.stop()
            if self._callback is not None:
                self._callback(b"")
        if not self._stderr_done:
            self._stderr_done = True
            self._stderr.put(b"")

    def _drain(self) -> None:
        """Read everything libssh2 can give now: stdout to the callback, stderr to the queue.

        ``channel.read`` first pulls every packet waiting on the socket into libssh2's
        buffer, so afterwards ``poll_channel_read`` (no syscall) tells exactly which stream
        still has data: reading one stream can pull the other's packets off the socket, and
        with the socket drained nothing would wake us for them.
        """
        if self._draining or self._stdout_done or self.channel is None:
            return
        self._draining = True
        try:
            idle = 0
            while idle < 2:  # two passes without progress: never spin on a stuck buffer
                channel = self.channel
                size, data = channel.read(READ_SIZE)
                if size > 0:
                    idle = 0
                    if self._callback is not None:
                        self._callback(data)
                    if self.channel is None:
                        return
                    continue
                if size != LIBSSH2_ERROR_EAGAIN and channel.eof():
                    self._end(None)
                    return
                if channel.poll_channel_read(1):
                    esize, edata = channel.read_stderr(READ_SIZE)
                    if esize > 0:
                        idle = 0
                        self._stderr.put(edata)
                        continue
                if not channel.poll_channel_read(0):
                    return
                idle += 1
        except _EOF_ERRORS as exc:
            self._end("the SSH connection was lost (%s)" % _describe(exc))
        except ssh2_errors.SSH2Error as exc:
            self._end("the SSH channel failed (%s)" % _describe(exc))
        finally:
            self._draining = False

    def _buffered(self) -> bool:
        """Whether libssh2 holds channel data (read from the socket by some other call)."""
        channel = self.channel
        return channel is not None and bool(channel.poll_channel_read(0) or channel.poll_channel_read(1))

    def read_stderr(self, size: int) -> bytes:
        return self._stderr.get()

    # -- writing -------------------------------------------------------------------------------

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        session, sock = self.link.session, self.link.sock
        while view:
            if self.channel is None or self._stdout_done:
                raise BrokenPipeError(errno.EPIPE, self.end_reason or "the SSH channel is closed")
            try:
                rc, written = self.channel.write(bytes(view[:1 << 20]))
            except _EOF_ERRORS as exc:
                self._end("the SSH connection was lost (%s)" % _describe(exc))
                raise BrokenPipeError(errno.EPIPE, self.end_reason) from exc
            if written > 0:
                view = view[written:]
            if rc == LIBSSH2_ERROR_EAGAIN:
                # Ask which way libssh2 is blocked before anything else touches the session:
                # a read in between (the drain) would overwrite the answer, and waiting to
                # read while our own packet sits unsent deadlocks both ends.
                directions = session.block_directions()
                if self._buffered():  # libssh2 reads the socket while writing: wake nobody else
                    self._drain()
                if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND:
                    gevent.socket.wait_write(sock.fileno())
                else:
                    gevent.socket.wait_read(sock.fileno())
        if self._buffered():
            self._drain()

    def close_stdin(self) -> None:
        if self.channel is not None and not self._stdout_done:
            try:
                retry(self.link.session, self.link.sock, Deadline(5.0, "sending EOF"), self.name,
                      self.channel.send_eof)
            except Exception:
                pass

    # -- ending --------------------------------------------------------------------------------

    def exit_status(self, timeout: Optional[float] = None) -> Optional[int]:
        """The remote command's exit status (negative: killed by that signal), or None."""
        if self.channel is None:
            return None
        deadline = Deadline(timeout if timeout is not None else 30.0, "waiting for the exit status")
        try:
            retry(self.link.session, self.link.sock, deadline, self.name, self.channel.close)
            retry(self.link.session, self.link.sock, deadline, self.name, self.channel.wait_closed)
        except Exception:
            return None
        _, signame, _, _ = self.channel.get_exit_signal()
        if signame:
            name = signame.decode("ascii", "replace") if isinstance(signame, bytes) else str(signame)
            try:
                return -signal.Signals["SIG" + name].value
            except KeyError:
                return None
        return self.channel.get_exit_status()

    def kill(self) -> None:
        """End the command: closing the session makes sshd hang up on it."""
        self._end("the tunnel was killed")
        try:
            self.link.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Free the channel, then the link (session, socket, hops), in that order."""
        if self._closed:
            return
        self._closed = True
        self._end(None)
        self._watcher.close()
        channel, self.channel = self.channel, None
        if channel is not None:
            try:
                channel.close()  # one non-blocking try; the session's disconnect follows
            except Exception:
                pass
            del channel  # freed before its session
        self.link.close()
