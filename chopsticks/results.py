"""Per-host outcomes of a fan-out: ``GroupResult`` maps each host to a value or an ``ErrorResult``. API layer.

A failure is data, not an exception: every host of a fan-out gets an entry, in the group's
order, whether it answered, raised, timed out or never connected.
"""

import builtins
import io
import pickle
from typing import Any, Dict, Iterator, Optional, Tuple

from chopsticks import errors
from chopsticks.errors import GroupError, RemoteException


class ErrorResult:
    """A host's failure. ``msg`` is a one-line message, ``tb`` the remote traceback (or
    None), ``exception`` the chopsticks error itself (``CallTimeout``, ``ConnectError`` ...),
    ``error_type`` its class's qualified name (``'chopsticks.errors.CallTimeout'``).

    It pickles (``encode``/``decode``), so results can cross a process boundary: the
    exception travels pickled and is rebuilt on the other side (a chopsticks error stays
    one, so ``isinstance`` checks keep working); one that cannot be arrives as
    ``exception=None``, its message and ``error_type`` kept."""

    __slots__ = ("msg", "tb", "exception", "error_type")

    def __init__(self, msg: str, tb: Optional[str] = None, exception: Optional[BaseException] = None):
        self.msg = msg
        self.tb = tb
        self.exception = exception
        cls = type(exception)
        self.error_type = None if exception is None else "%s.%s" % (cls.__module__, cls.__qualname__)

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ErrorResult":
        if isinstance(exc, RemoteException):
            return cls("%s: %s" % (exc.type_name, exc.remote_message), exc.remote_traceback or None, exc)
        text = str(exc).split("\n", 1)[0]
        if text.startswith("[") and "] " in text:
            text = text.split("] ", 1)[1]  # the host is the result's key already
        return cls("%s: %s" % (type(exc).__name__, text), None, exc)

    def encode(self) -> Tuple[str, Optional[str], Optional[str], Optional[bytes]]:
        """Plain data for another process: ``(msg, tb, error_type, the exception's state pickled)``."""
        return self.msg, self.tb, self.error_type, _exception_state(self.exception)

    @classmethod
    def decode(cls, data: Tuple[str, Optional[str], Optional[str], Optional[bytes]]) -> "ErrorResult":
        """The ErrorResult that ``encode`` gave ``data`` for (its exception rebuilt when it can be)."""
        msg, tb, error_type, state = data
        result = cls(msg, tb, _rebuild_exception(state))
        result.error_type = error_type
        return result

    def __reduce__(self):
        return _decode_error_result, (self.encode(),)

    def __repr__(self) -> str:
        return "ErrorResult(%r)" % self.msg

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ErrorResult) and (self.msg, self.tb) == (other.msg, other.tb)

    __hash__ = None  # type: ignore[assignment]


def _decode_error_result(data: Tuple[str, Optional[str], Optional[str], Optional[bytes]]) -> ErrorResult:
    return ErrorResult.decode(data)


def _exception_state(exc: Optional[BaseException]) -> Optional[bytes]:
    """``exc`` pickled, or None when it cannot be (a lock or a socket in its args)."""
    if exc is None:
        return None
    try:
        return pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
    except Exception:  # whatever an arbitrary object's pickling raises
        return None


def _rebuild_exception(state: Optional[bytes]) -> Optional[BaseException]:
    """The exception ``_exception_state`` pickled, or None if it cannot be rebuilt here (its
    class is not one a result may hold, or its constructor wants other arguments). Only ever
    given what this library's own processes encoded, never a remote's bytes."""
    if state is None:
        return None
    try:
        exc = loads_result(state)
    except Exception:
        return None
    return exc if isinstance(exc, BaseException) else None


# What a result may be built of when it crosses from another of our processes (a shard): the
# codec's closed set of types, ErrorResult and the exceptions this library raises or Python's
# own. A pickle naming anything else is refused, so whatever a shard sends, the driver builds
# no object with behaviour (the trust rule of results, kept across processes).
_RESULT_TYPES = {
    "builtins": frozenset({"list", "dict", "set", "frozenset", "tuple", "complex", "bytes", "bytearray", "str", "int",
                           "float", "bool"}
                          | {name for name, value in vars(builtins).items()
                             if isinstance(value, type) and issubclass(value, BaseException)}),
    "datetime": frozenset({"datetime", "date", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "uuid": frozenset({"UUID", "SafeUUID"}),
    "chopsticks.results": frozenset({"_decode_error_result"}),
    "chopsticks.errors": frozenset(name for name, value in vars(errors).items()
                                   if isinstance(value, type) and issubclass(value, BaseException)),
}


class _ResultUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name not in _RESULT_TYPES.get(module, ()):
            raise pickle.UnpicklingError("%s.%s is not a type a result may hold" % (module, name))
        return super().find_class(module, name)


def loads_result(data: bytes) -> Any:
    """Bytes another of our processes pickled (a shard's results, events and questions),
    unpickled into a result's types only (``_RESULT_TYPES``); UnpicklingError otherwise."""
    return _ResultUnpickler(io.BytesIO(data)).load()


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

