"""Extra SSH sessions to a host a tunnel is logged in to, through libssh, for bulk bytes. Transport layer.

libssh2, which carries every tunnel, encrypts one 16-byte block per OpenSSL call: about
200 MiB per CPU-second here, one core's worth of push whatever runs above it. libssh (the
``ssh-python`` package) encrypts whole packets: 860-1030 MiB per CPU-second. A
``BulkSession`` is one libssh session run blocking in an OS thread of its own, beside the hub
(libssh releases the GIL while it works), carrying one command's stdin (put) or stdout
(fetch).

It is a copy of the tunnel's login, not a second decision. ``Login.of(link)`` takes from the
tunnel's authenticated ``SSHLink``:

- the address its socket is connected to (no second name lookup, no second config reading);
- the host key it verified, which is the only key this session accepts, byte for byte,
  whatever known_hosts says by now (so the host key policy, known_hosts files and
  ``@revoked`` lines are the tunnel's, checked once by ``ssh_auth``);
- the credential it logged in with: the key file or the password, or the agent (whose keys
  libssh offers in turn, as the tunnel did).

Hosts behind jump hosts get no bulk session (``Login.of`` is None): their bytes would cross
the jump host's libssh2 session anyway. Nor does anything when ``ssh-python`` is missing.
"""

import base64
import dataclasses
import socket
import struct
from typing import Any, Optional, Tuple

from gevent.monkey import get_original

from chopsticks.errors import AuthenticationFailed, ConnectError, HostKeyChanged
from chopsticks.logs import visible
from chopsticks.transports.ssh_auth import Credential

try:
    from ssh import options as libssh_options
    from ssh.error_codes import SSH_AGAIN
    from ssh.exceptions import BaseSSHError
    from ssh.key import import_privkey_file
    from ssh.session import Session
except ImportError:  # pragma: no cover - ssh-python is in requirements.txt
    Session = None  # type: ignore

# aes128-gcm first, as the tunnels' libssh2 sessions (``ssh.CIPHERS``); libssh has no aes192.
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr,aes256-ctr,chacha20-poly1305@openssh.com"
_socket = get_original("socket", "socket")
# What a bulk command says before its stdin is read, and at most how long a line it may say.
MAX_LINE = 512
# libssh's TIMEOUT once a command has started, seconds: a week (0 would be its default, 10 s).
NO_TIMEOUT = 7 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class Login:
    """How to log in again to a host a tunnel is logged in to (``BulkSession``)."""

    name: str  # the host as the user named it, for messages
    family: int
    address: Tuple[Any, ...]
    user: str
    host_key: bytes
    credential: Credential
    passphrase: Optional[str] = dataclasses.field(repr=False)
    password: Optional[str] = dataclasses.field(repr=False)
    connect_timeout: float
    # the tunnel's keepalive (whole seconds, 0: off), kept by TCP here: a host that dies
    # without a RST ends the session after about interval x count_max, whether bytes are in
    # flight (TCP_USER_TIMEOUT) or the session waits for the host (TCP keepalive probes)
    keepalive_interval: int
    keepalive_count_max: int

    @classmethod
    def of(cls, link) -> Optional["Login"]:
        """The login of ``link`` (an ``SSHLink``), or None where no bulk session can follow it."""
        if Session is None or link.address is None:
            return None
        dest = link.dest
        return cls(name=dest.name, family=link.sock.family, address=tuple(link.address), user=dest.user,
                   host_key=link.host_key, credential=link.credential, passphrase=dest.passphrase,
                   password=dest.password, connect_timeout=dest.connect_timeout,
                   keepalive_interval=dest.keepalive_interval, keepalive_count_max=dest.keepalive_count_max)


def key_type(blob: bytes) -> str:
    """The algorithm name at the head of an SSH public key blob."""
    if len(blob) < 4:
        raise ValueError("not an SSH public key")
    size = struct.unpack(">I", blob[:4])[0]
    return blob[4:4 + size].decode("ascii")


def _host_key_algorithms(blob: bytes) -> str:
    """What to offer so that the server shows the key the tunnel verified."""
    kind = key_type(blob)
    return "rsa-sha2-512,rsa-sha2-256,ssh-rsa" if kind == "ssh-rsa" else kind


class BulkSession:
    """One libssh session, logged in as ``login`` says by ``open``; blocking, for one OS thread.
    ``abort`` (from any thread) ends whatever it is doing; ``close`` frees it, opened or not."""

    def __init__(self, login: Login):
        self.login = login
        self.session: Any = None
        self.channel: Any = None
        self._said = b""
        # the real socket even where gevent monkey-patched the module: libssh blocks on it, in
        # a thread of its own, and a gevent socket would give that thread a hub
        self.sock = _socket(login.family, socket.SOCK_STREAM)
        self.control: Optional[socket.socket] = None  # the same socket, for abort (libssh owns the other fd)

    def open(self) -> None:
        """Connect, check the host key, log in (ConnectError, HostKeyChanged, AuthenticationFailed)."""
        login, sock = self.login, self.sock
        where = "%s port %s" % (login.address[0], login.address[1])
        sock.settimeout(login.connect_timeout)
        try:
            sock.connect(login.address)
        except OSError as exc:
            raise ConnectError("[%s] a bulk session cannot connect to %s: %s" % (login.name, where, exc)) from exc
        sock.settimeout(None)  # libssh blocks on it, bounded by its own TIMEOUT
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if login.keepalive_interval:
            _keep_alive(sock, login.keepalive_interval, login.keepalive_count_max)
        self.session = session = Session()
        step = "the SSH handshake with " + where
        try:
            # the tunnel read the configuration: libssh reads no file, and decides nothing
            session.options_set_int_val(libssh_options.PROCESS_CONFIG, 0)
            session.options_set(libssh_options.HOST, str(login.address[0]))
            session.options_set(libssh_options.USER, login.user)
            session.options_set(libssh_options.CIPHERS_C_S, CIPHERS)
            session.options_set(libssh_options.CIPHERS_S_C, CIPHERS)
            session.options_set(libssh_options.HOSTKEYS, _host_key_algorithms(login.host_key))
            session.options_set_int_val(libssh_options.TIMEOUT, _timeout(login))
            self.control = sock.dup()
            session.set_socket(sock)
            sock.detach()  # libssh closes it with the session
            session.connect()
            shown = base64.b64decode(session.get_server_publickey().export_pubkey_base64())
            if shown != login.host_key:
                raise HostKeyChanged("[%s] a bulk session to %s was shown a host key other than the one the tunnel "
                                     "verified (%s); nothing was sent on it" % (login.name, where, key_type(shown)))
            step = "logging in as %s on %s with the tunnel's %s" % (login.user, where, login.credential.kind)
            self._authenticate()
        except BaseSSHError as exc:
            raise ConnectError("[%s] a bulk session failed in %s: %s" % (login.name, step, _describe(exc))) from exc

    def _authenticate(self) -> None:
        login, session = self.login, self.session
        credential = login.credential
        try:
            if credential.kind == "key":
                key = import_privkey_file(credential.key, (login.passphrase or "").encode())
                session.userauth_publickey(key)
            elif credential.kind == "agent":
                session.userauth_agent(login.user)
            else:
                session.userauth_password(login.user, login.password or "")
        except BaseSSHError as exc:
            raise AuthenticationFailed("[%s] a bulk session's login with the tunnel's %s was refused: %s"
                                       % (login.name, credential.kind, _describe(exc))) from exc

    def run(self, command: str) -> None:
        """Start ``command`` on a channel of its own (one per session)."""
        self.channel = channel = self.session.channel_new()
        channel.open_session()
        channel.request_exec(command)

    def read_line(self) -> str:
        """The command's next line on stdout, at most ``MAX_LINE`` bytes, or '' at its end."""
        while b"\n" not in self._said:
            size, data = self.channel.read(MAX_LINE)
            if size == SSH_AGAIN:  # libssh's TIMEOUT passed with nothing said: not the command's end
                raise ConnectError("[%s] a bulk command said nothing for %d s (the connect timeout)"
                                   % (self.login.name, _timeout(self.login)))
            if size <= 0 or not data:
                break
            self._said += data
            if len(self._said) > MAX_LINE:
                raise ConnectError("[%s] a bulk command said more than %d bytes in one line"
                                   % (self.login.name, MAX_LINE))
        line, _, self._said = self._said.partition(b"\n")
        return line.decode("utf-8", "replace").strip()

    def started(self) -> None:
        """The command has started: from now on a blocking call waits as long as the host works
        (a host that dies is found by TCP's keepalive, as the tunnel's; a put's own timeout
        bounds the rest), where until now each waited at most the connect timeout."""
        self.session.options_set_int_val(libssh_options.TIMEOUT, NO_TIMEOUT)

    def read(self, size: int) -> bytes:
        """At most ``size`` bytes of the command's stdout, raw (fetch over byte ranges): what
        has come, at least one byte, beginning with what ``read_line`` read ahead; b'' at its end."""
        if self._said:
            data, self._said = self._said[:size], self._said[size:]
            return data
        got, data = self.channel.read(size)
        if got == SSH_AGAIN:
            raise ConnectError("[%s] a bulk command said nothing for %d s" % (self.login.name, NO_TIMEOUT))
        return data if got > 0 and data else b""

    def read_error(self) -> str:
        """The start of what the command said on stderr (at most ``MAX_LINE`` bytes), once it ended."""
        size, data = self.channel.read(MAX_LINE, True)
        return data.decode("utf-8", "replace").strip() if size > 0 and data else ""

    def write(self, data: bytes) -> None:
        while data:
            result = self.channel.write(data)  # blocking: all of it, but for an error
            sent = result[-1] if isinstance(result, tuple) else result
            if sent <= 0:
                raise ConnectionError("the bulk session's channel took no bytes")
            data = data[sent:]

    def end_input(self) -> None:
        self.channel.send_eof()

    def abort(self) -> None:
        """From any thread: the session's blocking calls fail from now on."""
        for sock in (self.control, self.sock):
            try:
                if sock is not None and sock.fileno() >= 0:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        channel, self.channel = self.channel, None
        session, self.session = self.session, None
        try:
            if channel is not None:
                channel.close()
            if session is not None:
                session.disconnect()
        except BaseSSHError:
            pass  # the session is freed all the same
        del channel, session  # libssh frees them, and closes its socket
        self.sock.close()  # if libssh never took it
        if self.control is not None:
            self.control.close()


def _keep_alive(sock: socket.socket, interval: int, count: int) -> None:
    """TCP's keepalive as the tunnel's (Linux names; elsewhere only SO_KEEPALIVE)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", interval), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count),
                        ("TCP_USER_TIMEOUT", interval * count * 1000)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _timeout(login: Login) -> int:
    """libssh's TIMEOUT until a command starts, whole seconds: the connect timeout."""
    return max(1, int(login.connect_timeout))


def _describe(exc: BaseException) -> str:
    """libssh's error, which may carry what the server chose to say: bounded, and shown safe."""
    text = " ".join(str(arg) for arg in exc.args if arg not in (None, ""))
    return visible("%s%s" % (type(exc).__name__, ": " + text[:300] if text else ""))
