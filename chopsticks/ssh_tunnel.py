"""``SSHTunnel``: a tunnel to an agent on a host reached over SSH. API layer.

The default tunnel (``Tunnel``, as in the original). Directly, over libssh2 in this process
(``transports.ssh``: one socket per host, jump hosts, keys, known_hosts); through another
tunnel (``via=``), by that host's own OpenSSH client (``ssh_client_argv``). Importable from
``chopsticks.tunnel`` as well, where the original had it.
"""

import contextlib
import shlex
import time
from typing import Iterable, List, Optional, Tuple, Union

import gevent

from chopsticks import bootstrap
from chopsticks.connection import Connection, Explained
from chopsticks.errors import ConnectTimeout
from chopsticks.modules import ImportService
from chopsticks.options import TunnelOptions, replace
from chopsticks.transports import Pipe
from chopsticks.transports.libssh import Login
from chopsticks.transports.libssh2 import Deadline
from chopsticks.transports.ssh import HandshakeSlots, SSHLink, default_slots
from chopsticks.transports.ssh_jump import default_bastions
from chopsticks.transports.ssh_options import POLICIES, SSHOptions, resolve, split_target
from chopsticks.transports.ssh_pipe import SSHPipe
from chopsticks.sudo import SudoPrompt, explain as explain_sudo, sudo_argv
from chopsticks.tunnel import BaseTunnel


class SSHTunnel(BaseTunnel):
    """A tunnel to an agent on a host reached over SSH (libssh2, in-process, one socket).

    ``SSHTunnel('web-1')``, ``SSHTunnel('deploy@web-1:2222', key='~/.ssh/deploy')``,
    ``SSHTunnel('db-1', jump='bastion', sudo=True)``. SSH options (``user``, ``port``, ``key``,
    ``passphrase``, ``password``, ``agent``, ``jump``, ``known_hosts``, ``host_key_policy``,
    ``ssh_config``) may be given one by one or as one shared ``options=SSHOptions(...)``;
    ``~/.ssh/config`` fills in what neither says. Tunnels through the same jump host (the same
    resolved hops) share one login to it, which closes with the last of them. ``sudo=True``
    (or a user name) runs the agent under ``sudo -n``. ``python`` is the remote interpreter
    (default ``python3``). The
    tunnel options (``python``, ``sudo``, ``connect_timeout``, ``max_result``, ``serve``) may
    likewise come as one shared ``tunnel_options=TunnelOptions(...)``, as a ``Group`` gives them.
    """

    python3 = "python3"
    takes_sudo = True
    takes_sudo_password = True

    def __init__(self, host: str, *, options: Optional[SSHOptions] = None,
                 tunnel_options: Optional[TunnelOptions] = None, python: Optional[str] = None,
                 sudo: Union[bool, str, None] = None, connect_timeout: Optional[float] = None,
                 max_result: Optional[int] = None, modules: Optional[ImportService] = None,
                 serve: Optional[Iterable[str]] = None, handshake_slots: Optional[HandshakeSlots] = None,
                 via: Optional[BaseTunnel] = None, sudo_password: Optional[str] = None, **ssh_options):
        super().__init__(host, python=python, connect_timeout=connect_timeout, max_result=max_result,
                         modules=modules, serve=serve,
                         tunnel_options=(tunnel_options or TunnelOptions()).given(sudo=sudo), via=via,
                         sudo_password=sudo_password)
        self.options = options = replace(options or SSHOptions(), "SSHTunnel", ssh_options)
        # through another tunnel, that host's own ssh client reads its own configuration
        self.destination = resolve(host, options) if via is None else None
        if via is not None:
            ssh_client_argv(host, options)  # options it cannot pass on fail here, not at connect
        self._slots = handshake_slots

    @property
    def sudo(self) -> Optional[str]:
        """Whom the agent runs as through ``sudo -n``, or None."""
        return self.tunnel_options.sudo_user

    def _command(self) -> str:
        return self._shell(bootstrap.python_argv(self.python), self._sudo_prompt)

    def _sudo_user(self) -> Optional[str]:
        return self.sudo

    def _shell(self, words: List[str], prompt: Optional[SudoPrompt] = None) -> str:
        """``words`` as the remote's shell line, under the tunnel's sudo (answering ``prompt``)."""
        if self.sudo:
            words = sudo_argv(self.sudo, words, prompt)
        return " ".join(shlex.quote(word) for word in words)

    def python_command(self, code: str, args: List[str]) -> str:
        """The shell line that runs ``code`` under the agent's interpreter, as the agent's user."""
        return self._shell([self.python, "-S", "-c", code] + args)

    def _relayed_argv(self, via: Connection, until: float) -> List[str]:
        return ssh_client_argv(self.name, self.options) + [self._command()]

    def bulk_login(self) -> Optional[Login]:
        """How an extra session logs in as this tunnel did (``chopsticks.bulk``), or None."""
        pipe = self._conn.pipe if self._conn is not None else None
        if self.tunnel_options.sudo_password:  # its writers would need the password too: the stream it is
            return None
        return Login.of(pipe.link) if isinstance(pipe, SSHPipe) else None

    def _explain_failed_start(self, status: Optional[int], stderr: List[str]) -> Optional[Explained]:
        return (self.sudo and explain_sudo(stderr)) or super()._explain_failed_start(status, stderr)

    def _open_pipe(self, timeout: float, until: Optional[float] = None) -> Tuple[Pipe, float]:
        # Wait for a handshake slot first: the connect timeout starts once it is ours, so a
        # thousand tunnels queued behind the bound do not time out while they wait (until,
        # a caller's deadline, counts the wait too).
        slots = self._slots or default_slots()
        with contextlib.ExitStack() as holding:
            waited = None if until is None else max(0.0, until - time.monotonic())
            with gevent.Timeout(waited, ConnectTimeout("[%s] no SSH handshake slot came free in time (at most %d "
                                                       "handshakes run at once)" % (self.host, slots.limit))):
                holding.enter_context(slots)
            started = time.monotonic()
            if until is not None:
                timeout = max(0.001, min(timeout, until - started))
            deadline = Deadline(timeout, "connecting over SSH")
            assert self.destination is not None  # a tunnel with via= has none, and is not opened here
            link = SSHLink.open(self.destination, deadline, default_bastions())
            try:
                return link.open_channel(self._command(), deadline), started
            except BaseException:
                link.close()
                raise


# OpenSSH's StrictHostKeyChecking for each host key policy.
_STRICT = {"strict": "yes", "accept-new": "accept-new", "off": "no"}


def ssh_client_argv(target: str, options: SSHOptions) -> List[str]:
    """The OpenSSH client command (without the remote command) that reaches ``target``
    (``[user@]host[:port]``) from an intermediate host (``SSHTunnel(target, via=...)``): never
    a prompt (``BatchMode``), and every option passed on, as that host's paths; a password or
    passphrase, which nothing there could give, is refused."""
    refused = [name for name in ("password", "passphrase") if getattr(options, name) is not None]
    if refused:
        raise ValueError("SSHTunnel(%r, via=...): %s cannot be passed to the intermediate host's ssh client "
                         "(it runs with BatchMode=yes); use a key or an agent there" % (target, " and ".join(refused)))
    try:
        user, host, port = split_target(target)
    except ValueError as exc:
        raise ValueError("SSHTunnel(%r): %s" % (target, exc)) from None
    if host.startswith("-"):
        raise ValueError("SSHTunnel(%r): a host name cannot start with '-'" % target)
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % max(1, round(options.connect_timeout))]
    user, port = user or options.user, port or options.port
    if user:
        argv += ["-l", user]
    if port:
        argv += ["-p", str(port)]
    if options.hostname:  # an address of its own (an inventory's ansible_host); % is ssh's token sign
        argv += ["-o", "HostName=" + options.hostname.replace("%", "%%")]
    for key in _as_list(options.key):
        argv += ["-i", key]
    if not options.agent:
        argv += ["-o", "IdentityAgent=none"]
    for known_hosts in _as_list(options.known_hosts):
        argv += ["-o", "UserKnownHostsFile=" + known_hosts]
    if options.host_key_policy:
        argv += ["-o", "StrictHostKeyChecking=" + _STRICT[POLICIES[options.host_key_policy]]]
    if options.jump:
        argv += ["-J", ",".join(_as_list(options.jump))]
    if options.ssh_config is not None:
        argv += ["-F", options.ssh_config or "none"]
    if options.keepalive_interval is not None:
        argv += ["-o", "ServerAliveInterval=%d" % options.keepalive_interval]
    if options.keepalive_count_max is not None:
        argv += ["-o", "ServerAliveCountMax=%d" % options.keepalive_count_max]
    return argv + ["--", host]


def _as_list(value: Union[None, str, Iterable[str]]) -> List[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


#: The default tunnel type, as in the original chopsticks.
Tunnel = SSHTunnel
