"""Tunnels that remote code opens (the original's recursion), opened by the controller. Controller-side.

Code running on a remote uses the original's API (``agent.nested``): a ``Local()``, ``Sudo``,
``Docker`` or ``SSHTunnel`` there is a request to this controller, which opens that tunnel
``via=`` the requesting one (the remote's agent starts the far agent's command and relays
its bytes), runs the remote's calls on it and answers with their results. So the far agent
imports from here like any, and its results pass the codec's checks here before they go
back down.

Everything in a request is the remote's, hostile until checked: the kind of tunnel comes
from a closed set, and each option's name and type from that kind's list (no import
service, no secret, nothing the controller would read from its own disk: a key or config
path names a file on the remote's host, for its ``ssh`` client). The calls' pickles go on to
the far agent unopened. A remote holds at most ``MAX_OPEN`` tunnels at once, nested at most
``DEPTH_LIMIT`` deep counting from the controller's own (the original's limit, 2).
"""

import itertools
import math
import pickle
import traceback
import weakref
from typing import Any, Callable, Dict, List, Set, Tuple, Union

import gevent

from chopsticks import logs
from chopsticks.errors import ChopsticksError, DepthLimitExceeded, InternalError
from chopsticks.jobs import Call
from chopsticks.wire import protocol

# How deep tunnels may nest: the controller's own count 1, one opened by code on it 2, ...
DEPTH_LIMIT = 2
# Tunnels one remote may hold open at once.
MAX_OPEN = 16
# Requests of one remote waiting for their answers, at most, and the bytes they hold (a
# call's pickle is held until the call returns): one host cannot pile up greenlets or memory.
BACKLOG = 64
BYTES = 4 * protocol.MAX_TUNNEL_REQUEST

_Types = Union[type, Tuple[type, ...]]
_STRINGS = (str, list)  # a string or a list of strings
COMMON: Dict[str, _Types] = {"python": str, "connect_timeout": (int, float), "max_result": int}
OPTIONS: Dict[str, Dict[str, _Types]] = {
    "Local": {},
    "Sudo": {"user": str},
    "Docker": {"image": str, "rm": bool, "container": str, "engine": str, "engine_args": list},
    "SSHTunnel": {"user": str, "port": int, "key": _STRINGS, "known_hosts": _STRINGS, "host_key_policy": str,
                  "jump": _STRINGS, "sudo": (bool, str), "ssh_config": str, "keepalive_interval": int,
                  "keepalive_count_max": int},
}


def _classes() -> Dict[str, Callable[..., Any]]:
    from chopsticks.containers import Docker
    from chopsticks.ssh_tunnel import SSHTunnel
    from chopsticks.pipe_tunnels import Local, Sudo
    return {"Local": Local, "Sudo": Sudo, "Docker": Docker, "SSHTunnel": SSHTunnel}


def _finite(number: Any) -> bool:
    """Whether a number of seconds from a remote is one the controller's clocks can take:
    finite as a float (ints of any size arrive, and one past a float's range would raise
    OverflowError wherever it met a float)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _checked_options(kind: str, options: Any) -> Dict[str, Any]:
    """The options a remote asked for, if each is one its kind takes, of its type."""
    if not isinstance(options, dict):
        raise protocol.ProtocolError("tunnel options that are not a dict")
    allowed = dict(COMMON, **OPTIONS[kind])
    for name, value in options.items():
        if name not in allowed:
            raise TypeError("%s opened from remote code takes no option %r (it takes %s)"
                            % (kind, name, ", ".join(sorted(allowed))))
        ok = isinstance(value, allowed[name]) and not (isinstance(value, bool) and allowed[name] in (int, (int, float)))
        if isinstance(value, list):
            ok = ok and all(isinstance(item, str) for item in value)
        if allowed[name] == (int, float):  # seconds
            ok = ok and _finite(value)
        if not ok:
            raise TypeError("%s opened from remote code: option %r cannot be %r" % (kind, name, value))
    return options


class Nested:
    """The tunnels code on one remote opened, and the answers to its requests. It holds
    the remote's own tunnel weakly (the tunnel's connection holds this)."""

    def __init__(self, parent: Any):
        self._parent = weakref.ref(parent)
        self._tunnels: Dict[int, Any] = {}
        self._opening = 0  # opens under way: they count against MAX_OPEN as they start
        self._ids = itertools.count(1)
        # each request answered by a greenlet of its own (a call may run long), at most
        # BACKLOG of them holding at most BYTES of requests
        self._answers: Set[gevent.Greenlet] = set()
        self._held = 0

    def take(self, req_id: int, size: int, request: Any, host: str, reply: Callable[[int, int, bytes], None],
             violated: Callable[[str], None]) -> None:
        """A request of ``size`` bytes, as the connection decoded it (in the hub, from its read
        callback): its answer goes to ``reply(kind, req_id, payload)`` from a greenlet of its
        own; a request no agent of ours would send, to ``violated(reason)``. Past the bounds,
        ``protocol.ProtocolError`` at once."""
        if len(self._answers) >= BACKLOG:
            raise protocol.ProtocolError("more than %d tunnel requests unanswered" % BACKLOG)
        if self._held + size > BYTES:
            raise protocol.ProtocolError("more than %d bytes of tunnel requests unanswered" % BYTES)
        self._held += size
        answer = gevent.spawn(self._reply_to, req_id, request, host, reply, violated)
        self._answers.add(answer)

        def answered(_: gevent.Greenlet) -> None:
            self._answers.discard(answer)
            self._held -= size
        answer.link(answered)

    def _reply_to(self, req_id: int, request: Any, host: str, reply: Callable[[int, int, bytes], None],
                  violated: Callable[[str], None]) -> None:
        try:
            payload = self.answer(request)
        except protocol.ProtocolError as exc:
            violated(str(exc))
            return
        except Exception as exc:  # a bug of ours: the remote still gets an answer, never a hang
            logs.warning("internal_error", host=host, error=repr(exc), traceback=traceback.format_exc())
            payload = pickle.dumps((False, InternalError("[%s] chopsticks failed answering a tunnel request (%s: %s); "
                                                         "this is a bug in chopsticks, please report it"
                                                         % (host, type(exc).__name__, exc))))
        reply(protocol.TUNNEL_REPLY, req_id, payload)

    def end(self) -> None:
        """The remote's own tunnel ended: no more answers, and the tunnels through it close."""
        for answer in list(self._answers):
            answer.kill(block=False)
        gevent.spawn(self.close)

    def answer(self, request: Any) -> bytes:
        """The reply to one request, pickled for the remote (which trusts its controller):
        ``(True, value)`` or ``(False, exception)``. ``protocol.ProtocolError`` for a
        request no agent of ours would send."""
        try:
            reply: Tuple[bool, Any] = (True, self._answer(request))
        except protocol.ProtocolError:
            raise
        except (ChopsticksError, TypeError, ValueError) as exc:
            reply = (False, exc)
        try:
            return pickle.dumps(reply)
        except Exception:  # an exception that does not pickle goes as its text
            return pickle.dumps((False, ChopsticksError(str(reply[1]))))

    def _answer(self, request: Any) -> Any:
        if not isinstance(request, list) or not request or request[0] not in ("open", "call", "close"):
            raise protocol.ProtocolError("a malformed tunnel request")
        op, args = request[0], request[1:]
        if op == "open" and len(args) == 3 and args[0] in OPTIONS and isinstance(args[1], str):
            return self._open(args[0], args[1], _checked_options(args[0], args[2]))
        if op == "call" and len(args) == 4:
            tid, payload, module, timeout = args
            if (isinstance(payload, bytes) and (module is None or isinstance(module, str))
                    and (timeout is None or isinstance(timeout, (int, float)) and not isinstance(timeout, bool))):
                tunnel = self._tunnel(tid)
                if timeout is not None and not _finite(timeout):
                    raise ValueError("a call's timeout must be a finite number of seconds")
                return tunnel.run_call(Call(payload, module, timeout))
        if op == "close" and len(args) == 1:
            self._tunnel(args[0])  # a known one
            self._tunnels.pop(args[0]).close()
            return None
        raise protocol.ProtocolError("a malformed tunnel request (%s)" % op)

    def _tunnel(self, tid: Any) -> Any:
        tunnel = self._tunnels.get(tid) if type(tid) is int else None
        if tunnel is None:
            raise protocol.ProtocolError("a request for tunnel %r, which it never opened" % (tid,))
        return tunnel

    def _open(self, kind: str, name: str, options: Dict[str, Any]) -> int:
        parent = self._parent()
        if parent is None:
            raise ChopsticksError("the tunnel to this host was dropped")
        depth = parent.depth + 1
        if depth > DEPTH_LIMIT:
            raise DepthLimitExceeded("Depth limit of %d exceeded at %s -> %s" % (DEPTH_LIMIT, parent.host, name))
        if len(self._tunnels) + self._opening >= MAX_OPEN:
            raise ChopsticksError("[%s] at most %d tunnels may be open at once from remote code"
                                  % (parent.host, MAX_OPEN))
        # no bigger than what comes back up, asked for or not (the default is the largest)
        options["max_result"] = min(options.get("max_result", parent.max_result), parent.max_result)
        cls = _classes()[kind]
        if kind == "Sudo":
            tunnel = cls(options.pop("user", "root"), name=name, via=parent, modules=parent.modules, **options)
        else:
            tunnel = cls(name, via=parent, modules=parent.modules, **options)
        tunnel.depth = depth
        self._opening += 1
        try:
            tunnel.connect()  # as the original's ``with Docker(...)``: a failed start raises here
        finally:
            self._opening -= 1
        tid = next(self._ids)
        self._tunnels[tid] = tunnel
        return tid

    def close(self) -> None:
        """Close every tunnel still open (the remote's own tunnel ended)."""
        tunnels: List[Any] = list(self._tunnels.values())
        self._tunnels.clear()
        for tunnel in tunnels:
            tunnel.close()
