"""Tunnel options: what every tunnel takes beside its address, in one frozen object. API layer.

``TunnelOptions`` is to a tunnel what ``transports.ssh_options.SSHOptions`` is to an SSH
connection: its fields are the tunnel keywords (``python``, ``connect_timeout``,
``max_result``, ``serve``, and ``sudo`` for SSH tunnels), checked once when it is made. A tunnel
reads these only from its ``tunnel_options``; a ``Group`` tells its tunnel keywords from its SSH
options by these fields and hands one object to all the tunnels it makes. ``replace`` is the one
place where an unknown option name becomes a clear ``TypeError``.
"""

import dataclasses
from typing import Any, Dict, Iterable, Mapping, Optional, TypeVar, Union

DEFAULT_CONNECT_TIMEOUT = 30.0
# The largest result a call may return, encoded; bigger results fail that call alone. It
# also bounds what a compromised host can make the controller allocate per call (about 30x
# this, see codec), so it is not larger. Bulk data belongs in put/fetch.
DEFAULT_MAX_RESULT = 64 << 20

Options = TypeVar("Options")


@dataclasses.dataclass(frozen=True)
class TunnelOptions:
    """How a tunnel starts and bounds its agent (every field optional).

    ``python``: the remote interpreter (None: the tunnel kind's default). ``connect_timeout``
    bounds a start, ``max_result`` the encoded size of one result (both positive). ``serve``:
    modules or packages the remote may import from here beyond what the controller has imported
    (see ``chopsticks.modules``). ``sudo``: run the agent as this user through ``sudo -n``
    (True: root; SSH tunnels only). ``sudo_password``: the password sudo asks for (then
    ``sudo -S``, answered only to its own prompt: ``chopsticks.sudo``); never shown."""

    python: Optional[str] = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_result: int = DEFAULT_MAX_RESULT
    serve: Iterable[str] = ()
    sudo: Union[bool, str] = False
    sudo_password: Optional[str] = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.max_result <= 0:
            raise ValueError("connect_timeout and max_result must be positive")
        if not isinstance(self.serve, (str, bytes)):
            # read once, here: one object serves many tunnels, so a generator must not be
            # used up by the first (a string is left whole for the import service to refuse)
            object.__setattr__(self, "serve", tuple(self.serve))

    def given(self, **keywords: Any) -> "TunnelOptions":
        """These options with the keywords that were given (not None) in place of theirs: what
        a tunnel made with ``tunnel_options=`` and some keywords of its own runs with."""
        changes = {name: value for name, value in keywords.items() if value is not None}
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def sudo_user(self) -> Optional[str]:
        """Whom ``sudo`` runs the agent as, or None."""
        return "root" if self.sudo is True else (self.sudo or None)

    @classmethod
    def take(cls, keywords: Dict[str, Any]) -> Dict[str, Any]:
        """Remove the tunnel options from ``keywords`` and return them (the rest are not ours)."""
        return {field.name: keywords.pop(field.name) for field in dataclasses.fields(cls) if field.name in keywords}


def replace(options: Options, owner: str, changes: Mapping[str, Any]) -> Options:
    """``options`` (a frozen options object) with ``changes``; an unknown name is a TypeError
    that says ``owner`` got an unknown option."""
    try:
        return dataclasses.replace(options, **changes)  # type: ignore[type-var]
    except TypeError as exc:
        raise TypeError("%s got an unknown option: %s" % (owner, exc)) from None
