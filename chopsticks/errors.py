"""Every exception chopsticks raises, in one tree. Controller-side.

Each class also subclasses the builtin it means, so ``except TimeoutError`` or
``except ConnectionError`` works without importing anything from here::

    ChopsticksError(Exception)
    ├── RemoteException                 the remote function raised; carries type, message, traceback
    │   └── GroupError                  ``GroupResult.raise_failures()``: some hosts failed (as in the original)
    ├── DepthLimitExceeded(RecursionError)  remote code nested tunnels deeper than the limit
    ├── SerializationError(TypeError)   an argument cannot be pickled, or a result cannot be decoded
    ├── ResultTooLarge(ValueError)      a result exceeds the tunnel's ``max_result`` bytes
    ├── CallTimeout(TimeoutError)       ``call(..., timeout=)`` expired; the tunnel stays usable
    ├── WrongThread(RuntimeError)       a tunnel used from an OS thread its gevent hub does not run in
    ├── ClusterError(RuntimeError)      the Ray cluster cannot run shards: a node cannot read the SSH files named
    ├── MissingExtra(ImportError)       a feature needs an optional extra that is not installed (``chopsticks[ray]``)
    ├── InternalError(RuntimeError)     a bug in chopsticks itself (its cause says where); tunnel closed
    ├── TransferError(OSError)          a put or fetch failed its checks (changed while sent, digest, a bad listing)
    │   └── SpecialFileError            a FIFO, device or socket where a file, directory or symlink must be
    ├── TunnelError(ConnectionError)    the tunnel could not be used
    │   ├── ConnectError                starting the remote agent failed
    │   │   ├── ConnectTimeout(TimeoutError)  a connect, handshake or agent start passed its deadline
    │   │   ├── ContainerError          the container engine refused: no such image or container, name taken
    │   │   ├── AuthenticationFailed    the SSH server refused every credential tried
    │   │   ├── HostKeyError            the host key is refused (revoked)
    │   │   │   ├── UnknownHostKey      not in known_hosts, and the policy is strict
    │   │   │   └── HostKeyChanged      known_hosts has a different key for this host
    │   │   └── PythonNotFound          the remote has no usable ``python3`` (missing, or older than 3.9)
    │   ├── TunnelClosed                the agent went away: it exited, was killed, or the pipe broke
    │   ├── ShardLost                   the shard (process or Ray actor) running this host's part went away
    │   └── ProtocolViolation           the remote sent bytes that break the protocol; tunnel closed
"""


class ChopsticksError(Exception):
    """Base class of every error chopsticks raises."""


class RemoteException(ChopsticksError):
    """The remote function raised an exception.

    ``remote_type`` is its qualified type name (``'builtins.ValueError'``), ``remote_message``
    its ``str()``, ``remote_traceback`` the formatted remote traceback, source lines included.
    """

    def __init__(self, host, remote_type, remote_message, remote_traceback):
        self.host = host
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(host, remote_type, remote_message)

    def __reduce__(self):  # pickles (a result crossing to another process) with all four arguments
        return type(self), (self.host, self.remote_type, self.remote_message, self.remote_traceback)

    @property
    def type_name(self):
        """The remote exception's class name without its module (``'ValueError'``)."""
        return self.remote_type.rpartition(".")[2]

    def __str__(self):
        text = "[%s] %s: %s" % (self.host, self.type_name, self.remote_message)
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip("\n")
        return text


class DepthLimitExceeded(ChopsticksError, RecursionError):
    """Remote code tried to open a tunnel deeper than the limit (``chopsticks.nesting``)."""


class SerializationError(ChopsticksError, TypeError):
    """A call's arguments cannot be pickled, or a result cannot be decoded."""


class ResultTooLarge(ChopsticksError, ValueError):
    """A result is larger than the tunnel accepts (``max_result``)."""


class CallTimeout(ChopsticksError, TimeoutError):
    """A call did not finish within its ``timeout``; the remote call may still be running."""


class GroupError(RemoteException):
    """Some hosts of a fan-out failed; ``failures`` maps each to its ErrorResult.

    A RemoteException because the original chopsticks' ``raise_failures`` raised one."""

    def __init__(self, message, failures):
        ChopsticksError.__init__(self, message)
        self.message = message
        self.failures = failures
        self.host, self.remote_type, self.remote_message, self.remote_traceback = None, "GroupError", message, ""

    def __reduce__(self):
        return type(self), (self.message, self.failures)

    def __str__(self):
        return self.message


class WrongThread(ChopsticksError, RuntimeError):
    """A tunnel was used from an OS thread that its gevent hub does not run in (it would
    wait forever, or gevent would fail): use it from the thread that runs it, or close it
    there first. Tunnels the hub thread runs (``chopsticks.hub``) serve every thread."""


class ClusterError(ChopsticksError, RuntimeError):
    """The Ray cluster cannot run a group's shards: one line per node that cannot (say, one
    that cannot read the SSH key, known_hosts or ssh_config the driver names)."""


class MissingExtra(ChopsticksError, ImportError):
    """A feature needs an optional extra that is not installed; the message names the
    ``pip install`` that adds it."""


class InternalError(ChopsticksError, RuntimeError):
    """A bug in chopsticks itself, not in the remote or the network: its ``__cause__`` is the
    exception our code raised. The tunnel it happened on is closed. Please report it."""


class TransferError(ChopsticksError, OSError):
    """A put or fetch failed its checks: the file changed while it was sent, or what arrived
    does not match what was sent. The destination is left as it was."""


class SpecialFileError(TransferError):
    """A FIFO, device or socket was met where put and fetch take only regular files,
    directories and symlinks (reading or replacing it could block or damage the system)."""


class TunnelError(ChopsticksError, ConnectionError):
    """The tunnel could not be used."""


class ConnectError(TunnelError):
    """The remote agent could not be started."""


class ConnectTimeout(ConnectError, TimeoutError):
    """Connecting, the SSH handshake, or the agent's start did not finish in time."""


class AuthenticationFailed(ConnectError):
    """The SSH server refused every credential that was tried."""


class HostKeyError(ConnectError):
    """The server's host key is refused."""


class UnknownHostKey(HostKeyError):
    """The host key is not in known_hosts and the policy does not accept new keys."""


class HostKeyChanged(HostKeyError):
    """known_hosts records a different key of the same type for this host."""


class ContainerError(ConnectError):
    """The container engine could not start the agent's container: a missing image or engine,
    a name already taken, no such running container."""


class PythonNotFound(ConnectError):
    """The remote has no usable Python: missing, or older than the agent needs."""


class TunnelClosed(TunnelError):
    """The agent went away (exited, was killed, or its pipe broke) or the tunnel was closed."""


class ShardLost(TunnelError):
    """The shard that ran this host's part of a fan-out (a shard process, or a Ray actor) went
    away before the host finished; the message names the shard and its node. The next
    fan-out starts a new shard for the host."""


class ProtocolViolation(TunnelError):
    """The remote sent bytes that break the protocol. The tunnel is closed, nothing is run."""
