"""ProxyCommand: an SSH connection carried by a local command's stdin and stdout. Transport layer.

OpenSSH runs ``ProxyCommand`` with the user's shell (``$SHELL -c 'exec COMMAND'``, its
tokens expanded by ``ssh_options.resolve``) and speaks SSH over the command's stdin and
stdout. libssh2 needs a socket, so the command's stdin and stdout are both one end of a
socketpair and the other end is the connection the session's ``ssh_relay.Wire`` is given,
exactly as a TCP socket would be: the relay bounds what the command may send before the
login, and its splice afterwards leaves nothing of ours between libssh2 and the command. No
second pump.

The command runs in a session of its own, so closing kills all of it (a pipeline too), and
a Ctrl-C at the controller's terminal does not reach it. Its stderr is kept (the last
``MAX_STDERR`` bytes) for the error that names it when it fails.
"""

import os
import subprocess
from typing import Optional

import gevent
import gevent.socket
from gevent.hub import get_hub

from chopsticks.errors import ConnectError
from chopsticks.logs import visible
from chopsticks.transports.process import kill_session, start_child, wait_child
from chopsticks.transports.ssh_options import Destination

MAX_STDERR = 2048  # bytes of the command's stderr kept for its error message
# Once the connection closed under the handshake: how long the command may take to exit, so
# that its status and stderr, not a bare "connection closed", are what the error says.
EXIT_WAIT = 1.0
# After the SSH session is closed, how long the command may take to exit before it is killed
# (one that failed the connection is killed at once).
CLOSE_GRACE = 0.5


class ProxyCommand:
    """A running ProxyCommand; ``sock`` is the SSH connection it carries."""

    def __init__(self, dest: Destination):
        assert dest.proxy_command is not None
        self.command = dest.proxy_command
        self.name = dest.name
        shell = os.environ.get("SHELL") or "/bin/sh"
        self.sock, theirs = gevent.socket.socketpair()
        try:
            self.proc = start_child([shell, "-c", "exec " + self.command], None, stdin=theirs.fileno(),
                                    stdout=theirs.fileno(), stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self.sock.close()
            raise ConnectError("[%s] cannot start ProxyCommand %r with %s: %s" % (
                self.name, self.command, shell, exc.strerror or exc)) from exc
        except BaseException:
            self.sock.close()
            raise
        finally:
            theirs.close()
        self.stderr = bytearray()
        fd = self.proc.stderr.fileno()
        os.set_blocking(fd, False)
        self._stderr_fd = fd
        self._watcher = get_hub().loop.io(fd, 1)
        self._watcher.start(self._read_stderr)

    def _read_stderr(self) -> None:
        try:
            data = os.read(self._stderr_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._watcher.stop()
            return
        self.stderr += data
        del self.stderr[:-MAX_STDERR]

    def said(self) -> str:
        """The command's stderr so far, as one line."""
        text = self.stderr.decode("utf-8", "replace").strip()
        return visible(" / ".join(line.strip() for line in text.splitlines() if line.strip()))

    def exit_status(self, wait: float = 0.0) -> Optional[int]:
        """The command's exit status, waiting up to ``wait`` seconds; None while it runs."""
        status = wait_child(self.proc, max(0.0, wait))
        if status is None:
            return None
        self._read_stderr()  # what it wrote last, before its pipe is read no more
        return status

    def report(self, wait: float = 0.0) -> str:
        """What the command did, for an error: its exit status or that it still runs, and its stderr."""
        status = self.exit_status(wait)
        said = self.said()
        if status is None:
            state = "ProxyCommand %r is still running" % self.command
        else:
            state = "ProxyCommand %r exited with status %d" % (self.command, status)
        return state + (": %s" % said if said else " and wrote nothing to stderr" if status is not None else "")

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """End the command (its stdin closes; past ``grace`` seconds it is killed) and free its fds."""
        self.sock.close()
        if self.exit_status(grace) is None:
            kill_session(self.proc.pid)
            self.exit_status(CLOSE_GRACE)
        self._watcher.close()
        self.proc.stderr.close()
