"""Per-host outcomes of a fan-out: ``GroupResult`` maps each host to a value or an ``ErrorResult``. API layer.

A failure is data, not an exception: every host of a fan-out gets an entry, in the group's
order, whether it answered, raised, timed out or never connected.
"""

from typing import Any, Dict, Iterator, Optional, Tuple

from chopsticks.errors import GroupError, RemoteException


class ErrorResult:
    """A host's failure. ``msg`` is a one-line message, ``tb`` the remote traceback (or
    None), ``exception`` the chopsticks error itself (``CallTimeout``, ``ConnectError`` ...)."""

    __slots__ = ("msg", "tb", "exception")

    def __init__(self, msg: str, tb: Optional[str] = None, exception: Optional[BaseException] = None):
        self.msg = msg
        self.tb = tb
        self.exception = exception

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ErrorResult":
        if isinstance(exc, RemoteException):
            return cls("%s: %s" % (exc.type_name, exc.remote_message), exc.remote_traceback or None, exc)
        text = str(exc).split("\n", 1)[0]
        if text.startswith("[") and "] " in text:
            text = text.split("] ", 1)[1]  # the host is the result's key already
        return cls("%s: %s" % (type(exc).__name__, text), None, exc)

    def __repr__(self) -> str:
        return "ErrorResult(%r)" % self.msg

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorResult) and (self.msg, self.tb) == (other.msg, other.tb)

    __hash__ = None  # type: ignore[assignment]


class GroupResult(Dict[str, Any]):
    """host -> value or ErrorResult, in the group's order."""

    def successful(self) -> Iterator[Tuple[str, Any]]:
        """(host, value) for every host that returned a value."""
        return ((host, value) for host, value in self.items() if not isinstance(value, ErrorResult))

    def failures(self) -> Iterator[Tuple[str, ErrorResult]]:
        """(host, ErrorResult) for every host that failed."""
        return ((host, value) for host, value in self.items() if isinstance(value, ErrorResult))

    @property
    def ok(self) -> bool:
        return not any(True for _ in self.failures())

    def raise_failures(self) -> "GroupResult":
        """Raise GroupError listing every failed host, if any did; else return self."""
        failed = dict(self.failures())
        if failed:
            lines = ["%s: %s" % (host, error.msg) for host, error in failed.items()]
            raise GroupError("%d of %d hosts failed:\n  %s" % (len(failed), len(self), "\n  ".join(lines)),
                             failed)
        return self

    def __repr__(self) -> str:
        return "GroupResult(%s)" % dict.__repr__(self)

