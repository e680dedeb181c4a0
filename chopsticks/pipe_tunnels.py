"""Tunnels to an agent behind a local command: ``SubprocessTunnel``, ``Local``, ``Sudo``. API layer.

A pipe tunnel's agent is reached through a local command's stdin and stdout
(``transports.process.ProcessPipe``); through another tunnel (``via=``), that tunnel's agent
runs the command instead. ``Docker`` (``chopsticks.containers``) and your own pipe tunnels
build on ``SubprocessTunnel``. Importable from ``chopsticks.tunnel`` as well, where the
original had them.
"""

import time
from typing import Callable, List, Optional, Tuple

from chopsticks import bootstrap
from chopsticks.connection import Connection, Explained
from chopsticks.errors import ConnectError
from chopsticks.sudo import explain as explain_sudo, sudo_argv
from chopsticks.transports import Pipe
from chopsticks.transports.process import ProcessPipe
from chopsticks.tunnel import BaseTunnel


class SubprocessTunnel(BaseTunnel):
    """A tunnel whose agent is reached through a local command's stdin and stdout.

    The base of ``Local``, ``Sudo`` and ``Docker``, and of your own pipe tunnels: override
    ``cmd_args()`` to wrap the remote ``python`` command in whatever reaches the other side
    (``kubectl exec -i``, ``lxc exec``, ``chroot`` ...). The command must pass stdin and stdout
    through byte for byte and must not write to stdout itself; what it writes to stderr is
    shown as the host's output. Set the class attribute ``python3`` (as in the original
    chopsticks) or pass ``python=`` to choose the interpreter.
    """

    def __init__(self, host: Optional[str] = None, **options):
        if host is None:  # the original's subclasses set self.host, then call __init__()
            host = getattr(self, "host", "")
        super().__init__(host, **options)

    @property
    def PYTHON_ARGS(self) -> List[str]:  # noqa: N802 (the original's name)
        """The interpreter's arguments that start the agent (the original's attribute)."""
        return bootstrap.python_argv(self.python)[1:]

    def cmd_args(self) -> List[str]:
        """The command that starts the agent: by default the remote ``python`` itself."""
        return bootstrap.python_argv(self.python)

    def _relayed_argv(self, via: Connection, until: float) -> List[str]:
        return self.cmd_args()

    def _after_kill(self) -> Optional[Callable[[], None]]:
        """What cleans up after the command had to be killed (a container tunnel removes its
        container), or None: a callable of plain values, never holding the tunnel, since the
        pipe outlives a tunnel dropped without ``close()``."""
        return None

    def _open_pipe(self, timeout: float, until: Optional[float] = None) -> Tuple[Pipe, float]:
        # nothing to wait for: a spawn is bounded by the system, then the handshake by until
        argv = self.cmd_args()
        try:
            return ProcessPipe(argv, after_kill=self._after_kill()), time.monotonic()
        except FileNotFoundError:
            if argv[0] == self.python:
                raise  # connect reports the missing interpreter
            raise ConnectError("[%s] cannot start %s: it is not installed (not found on PATH)"
                               % (self.host, argv[0])) from None


class Local(SubprocessTunnel):
    """A tunnel to an agent in a local subprocess of the system ``python3``.

    ``Local()`` or ``Local('name', python='/usr/bin/python3.11')``.
    """

    def __init__(self, name: str = "localhost", **options):
        super().__init__(name, **options)


class Sudo(SubprocessTunnel):
    """A tunnel to a local agent run as another user through ``sudo -n`` (never a password
    prompt: allow the interpreter with NOPASSWD in sudoers), or, with ``sudo_password=``,
    through ``sudo -S`` answering only its own prompt (``chopsticks.sudo``).

    ``Sudo()`` (root, named ``root@localhost``), ``Sudo('postgres', name='pg')``.
    """

    takes_sudo_password = True

    def __init__(self, user: str = "root", name: Optional[str] = None, **options):
        if not isinstance(user, str) or not user or user.startswith("-"):
            raise ValueError("Sudo needs a user name, got %r" % (user,))
        self.user = user
        super().__init__(name or "%s@localhost" % user, **options)

    def cmd_args(self) -> List[str]:
        return sudo_argv(self.user, super().cmd_args(), self._sudo_prompt)

    def _sudo_user(self) -> Optional[str]:
        return self.user

    def _explain_failed_start(self, status: Optional[int], stderr: List[str]) -> Optional[Explained]:
        return explain_sudo(stderr) or super()._explain_failed_start(status, stderr)
