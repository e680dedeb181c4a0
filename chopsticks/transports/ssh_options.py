"""SSH options: what the user asks for (``SSHOptions``) and what it resolves to (``Destination``). Controller-side.

``SSHOptions`` is one frozen object shared by many tunnels (a ``Group`` passes its own to
every host). ``resolve`` merges it with the OpenSSH configuration (``ssh_config``: the user's
file, then the system's) the way OpenSSH does: options given explicitly win, then the first
matching config value, then the defaults. Secrets never appear in a repr.
"""

import dataclasses
import os
from typing import Optional, Sequence, Tuple, Union

from chopsticks.transports import ssh_config

POLICIES = {
    "strict": "strict", "yes": "strict", "ask": "strict", "true": "strict",
    "accept-new": "accept-new",
    "off": "off", "no": "off", "false": "off",
}
DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
# OpenSSH's GlobalKnownHostsFile default; a module default, so tests can point it elsewhere.
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
# Keepalive, on by default (OpenSSH's ServerAliveInterval is 0, off): a host that dies
# without a RST (power loss, a cut link, a frozen VM) would otherwise hang a call with no
# timeout until TCP gives up, which takes about 15 minutes. 15 s x 3 ends such a call
# within 45 s, yet a host stalled for half a minute (swapping, a busy hypervisor) survives;
# the cost is one small packet per 15 s, and only on a connection that is silent.
DEFAULT_KEEPALIVE_INTERVAL = 15
DEFAULT_KEEPALIVE_COUNT_MAX = 3

StrOrList = Union[None, str, Sequence[str]]


def _as_tuple(value: StrOrList) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class SSHOptions:
    """How to reach hosts over SSH. Every field is optional; ``~/.ssh/config`` fills the gaps.

    ``hostname`` is the address to connect to, when not the host's own name (as
    ``HostName``; an inventory's ``ansible_host``); ``key`` and ``known_hosts`` take a path
    or a list of paths; ``jump`` a
    ``[user@]host[:port]`` or a list of them (a chain, outermost first), like ProxyJump;
    ``host_key_policy`` is ``'strict'`` (default), ``'accept-new'`` or ``'off'`` (OpenSSH's
    ``yes``/``accept-new``/``no`` are accepted too); ``ssh_config`` is the config file to
    read (``None``: ``~/.ssh/config`` then ``/etc/ssh/ssh_config``, as ``ssh`` does; a path:
    that file only, as ``ssh -F``; ``''``: none). ``keepalive_interval`` (whole seconds,
    0: off; default 15, or ``ServerAliveInterval``) and ``keepalive_count_max`` (default 3, or
    ``ServerAliveCountMax``): a connection silent that long gets a keepalive request, and
    one that answers none of that many in a row is closed (``TunnelClosed``).
    """

    user: Optional[str] = None
    port: Optional[int] = None
    hostname: Optional[str] = None
    key: StrOrList = None
    passphrase: Optional[str] = dataclasses.field(default=None, repr=False)
    password: Optional[str] = dataclasses.field(default=None, repr=False)
    agent: bool = True
    jump: StrOrList = None
    known_hosts: StrOrList = None
    host_key_policy: Optional[str] = None
    connect_timeout: float = 10.0
    ssh_config: Optional[str] = None
    keepalive_interval: Optional[int] = None
    keepalive_count_max: Optional[int] = None

    def __post_init__(self):
        if self.port is not None and not (isinstance(self.port, int) and 0 < self.port < 65536):
            raise ValueError("port must be an integer from 1 to 65535, got %r" % (self.port,))
        if self.host_key_policy is not None and self.host_key_policy not in POLICIES:
            raise ValueError("host_key_policy must be one of 'strict', 'accept-new', 'off', got %r"
                             % (self.host_key_policy,))
        if not self.connect_timeout or self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        # whole seconds: libssh2 times keepalives with time(), one-second resolution
        for name, low in (("keepalive_interval", 0), ("keepalive_count_max", 1)):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
                raise ValueError("%s must be a whole number of at least %d, got %r" % (name, low, value))

    def __repr__(self) -> str:
        fields = ["%s=%r" % (f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.repr and getattr(self, f.name) != f.default]
        secrets = ["%s=***" % name for name in ("passphrase", "password") if getattr(self, name) is not None]
        return "SSHOptions(%s)" % ", ".join(fields + secrets)


@dataclasses.dataclass(frozen=True)
class Destination:
    """A host resolved for connecting: every option settled, jump hosts resolved too."""

    name: str  # what the user called it; used in messages
    hostname: str
    port: int
    user: str
    keys: Tuple[str, ...]
    explicit_keys: Tuple[str, ...]
    passphrase: Optional[str] = dataclasses.field(repr=False)
    password: Optional[str] = dataclasses.field(repr=False)
    agent: bool
    known_hosts: Tuple[str, ...]
    host_key_policy: str
    connect_timeout: float
    jumps: Tuple["Destination", ...]
    keepalive_interval: int = DEFAULT_KEEPALIVE_INTERVAL  # 0: off
    keepalive_count_max: int = DEFAULT_KEEPALIVE_COUNT_MAX
    global_known_hosts: Tuple[str, ...] = ()  # read after known_hosts; never written
    identities_only: bool = False  # IdentitiesOnly: the agent offers only keys among ``keys``
    proxy_command: Optional[str] = None  # ProxyCommand, tokens expanded: the connection is its stdin/stdout
    hash_known_hosts: bool = False  # HashKnownHosts: accept-new records the name hashed


def split_target(target: str) -> Tuple[Optional[str], str, Optional[int]]:
    """``[user@]host[:port]`` (IPv6 as ``[addr]:port``) -> (user, host, port)."""
    user = None
    if "@" in target:
        user, _, target = target.rpartition("@")
    port_text = None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if rest.startswith(":"):
            port_text = rest[1:]
    elif target.count(":") == 1:
        host, _, port_text = target.partition(":")
    else:
        host = target
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError("port %r is not a number from 1 to 65535" % port_text)
        port = int(port_text)
    if not host:
        raise ValueError("empty host name in %r" % target)
    return user, host, port


def resolve(target: str, options: SSHOptions, _depth: int = 0) -> Destination:
    """Settle every option for ``target`` (``[user@]host[:port]``)."""
    if _depth > 8:
        raise ValueError("jump host chain too long (a ProxyJump loop?)")
    try:
        user, alias, port = split_target(target)
    except ValueError as exc:
        raise ValueError("bad host %r: %s" % (target, exc)) from None
    user = user or options.user
    config = ssh_config.lookup(alias, ssh_config.sources(options.ssh_config), user=user)
    hostname = options.hostname or ssh_config.resolved_hostname(config.get("hostname"), alias)
    user = user or str(config.get("user") or ssh_config.local_user())
    port = port or options.port or int(config.get("port", 22))
    tokens = ssh_config.Target(alias, hostname, port, user)

    def paths(values: Sequence[str], keyword: str) -> Tuple[str, ...]:
        return tuple(ssh_config.expand(value, keyword, tokens) for value in values)

    explicit = paths(_as_tuple(options.key), "IdentityFile")
    keys = explicit or paths(config.get("identityfile", []), "IdentityFile") or \
        tuple(os.path.expanduser(k) for k in DEFAULT_KEYS)
    known = _as_tuple(options.known_hosts) or _unless_none(config.get("userknownhostsfile", DEFAULT_KNOWN_HOSTS))
    global_known = config.get("globalknownhostsfile", GLOBAL_KNOWN_HOSTS)
    policy_name = options.host_key_policy or str(config.get("stricthostkeychecking", "strict")).lower()
    policy = POLICIES.get(policy_name)
    if policy is None:
        raise ValueError("unknown StrictHostKeyChecking value %r for %s" % (policy_name, alias))
    # ProxyJump and ProxyCommand: a jump given in code wins over both, as ssh -J does
    jump_spec = _as_tuple(options.jump)
    proxy_command = None
    if not jump_spec:
        configured_jump = str(config.get("proxyjump", "none"))
        jump_spec = () if configured_jump.lower() == "none" else tuple(configured_jump.split(","))
        command = config.get("proxycommand")
        if command is not None and command.lower() != "none":
            proxy_command = ssh_config.expand(command, "ProxyCommand", tokens)
    # A jump host gets its own config lookup and the shared credentials (key, agent, known
    # hosts), but not the target's user, port or jump (that would loop).
    jump_options = dataclasses.replace(options, jump=None, user=None, port=None, hostname=None)
    jumps: Tuple[Destination, ...] = ()
    for hop in jump_spec:
        resolved = resolve(hop.strip(), jump_options, _depth + 1)
        jumps += resolved.jumps + (dataclasses.replace(resolved, jumps=()),)
    # only the first hop's own ProxyCommand runs (OpenSSH reaches the others with ssh -W)
    jumps = jumps[:1] + tuple(dataclasses.replace(hop, proxy_command=None) for hop in jumps[1:])
    configured_timeout = config.get("connecttimeout")
    timeout = float(configured_timeout) if configured_timeout and options.connect_timeout == 10.0 \
        else options.connect_timeout
    return Destination(
        name=target, hostname=hostname, port=port, user=user, keys=keys, explicit_keys=explicit,
        passphrase=options.passphrase, password=options.password, agent=options.agent,
        known_hosts=paths(known, "UserKnownHostsFile"),
        global_known_hosts=tuple(os.path.expanduser(path) for path in _unless_none(global_known)),
        host_key_policy=policy, connect_timeout=timeout, jumps=jumps,
        keepalive_interval=_first(options.keepalive_interval, config.get("serveraliveinterval"),
                                  DEFAULT_KEEPALIVE_INTERVAL),
        keepalive_count_max=_first(options.keepalive_count_max, config.get("serveralivecountmax"),
                                   DEFAULT_KEEPALIVE_COUNT_MAX),
        identities_only=bool(config.get("identitiesonly", False)), proxy_command=proxy_command,
        hash_known_hosts=bool(config.get("hashknownhosts", False)),
    )


def _unless_none(paths: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """A list of files, where ``none`` means no file (UserKnownHostsFile none)."""
    return tuple(path for path in paths or () if path.lower() != "none")


def _first(given: Optional[int], configured: Optional[int], default: int) -> int:
    """As OpenSSH: an option given explicitly, else the config file's, else the default."""
    return given if given is not None else configured if configured is not None else default
