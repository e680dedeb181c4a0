"""Queue: per-host FIFOs of different calls, run together. API layer (the original's ``Queue``).

``queue.call(target, fn, ...)`` appends to the FIFO of each host of ``target`` (a tunnel or a
Group) and returns an ``AsyncResult``; ``queue.run()`` pickles each queued call once (as its
arguments are then), and works every host's FIFO at once, in order, so fast hosts never wait
for slow ones, through the same fan-out engine as ``Group`` (``jobs.fan_out``), bounded by
the number of FIFOs only. A failed call's value is an ``ErrorResult`` and the host goes on
with its next call. The hosts of a sharded Group (``workers=``, ``cluster=``) work through
their FIFOs in their shards (a ``jobs.Calls`` job): their calls' values are set as each host
finishes its FIFO, in order.
"""

import collections
import functools
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import gevent

from chopsticks.errors import ChopsticksError
from chopsticks.group import Group
from chopsticks.jobs import Call, Calls, Stateless, fan_out
from chopsticks.results import ErrorResult, GroupResult
from chopsticks.tunnel import BaseTunnel

if TYPE_CHECKING:
    from chopsticks.shards.driver import Driver

_NOT_READY = object()


class AsyncResult:
    """The result of a queued call, once ``Queue.run()`` has run it: ``.value``."""

    def __init__(self) -> None:
        self._value: Any = _NOT_READY
        self._callbacks: List[Callable[[Any], None]] = []

    @property
    def ready(self) -> bool:
        return self._value is not _NOT_READY

    @property
    def value(self) -> Any:
        """The call's value (an ErrorResult if it failed); ValueError before the queue ran it."""
        if self._value is _NOT_READY:
            raise ValueError("this call has not run yet: call queue.run()")
        return self._value

    def with_callback(self, callback: Callable[[Any], None]) -> "AsyncResult":
        """Call ``callback(value)`` when the value arrives (now, if it has); returns self."""
        if self.ready:
            callback(self._value)
        else:
            self._callbacks.append(callback)
        return self

    def _set(self, value: Any) -> None:
        self._value = value
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(value)

    def __repr__(self) -> str:
        return "<AsyncResult %s>" % ("%r" % (self._value,) if self.ready else "pending")


# A call as queued, pickled when the queue runs: (fn, args, kwargs).
_Queued = Tuple[Callable, Tuple[Any, ...], Dict[str, Any]]


class _Fifos(Stateless):
    """The queue's work as one job: each tunnel works through its own FIFO of prepared calls,
    in order, setting each call's AsyncResult (a failed call's value is an ErrorResult)."""

    def __init__(self, fifos: Dict[str, Deque[Tuple[Call, AsyncResult]]]):
        self.fifos = fifos

    def run(self, tunnel: BaseTunnel) -> None:
        fifo = self.fifos[tunnel.host]
        while fifo:
            call, result = fifo.popleft()
            try:
                value = call.run(tunnel)
            except ChopsticksError as exc:
                value = ErrorResult.from_exception(exc)
            result._set(value)


class Queue:
    """Per-host FIFOs of calls; ``run()`` runs them all, each host in its own order."""

    def __init__(self) -> None:
        self._fifos: "collections.OrderedDict[str, Tuple[BaseTunnel, Deque]]" = collections.OrderedDict()
        self._sharded: Dict[str, "Driver"] = {}  # a host of a sharded Group -> the driver of its shards

    def call(self, target: Union[BaseTunnel, Group], fn, /, *args, **kwargs) -> AsyncResult:
        """Queue ``fn(*args, **kwargs)`` on a tunnel, or on every tunnel of a Group (pickled
        by ``run()``, once for all of them).

        For a Group, the AsyncResult's value is a GroupResult, set once every host ran it."""
        queued: _Queued = (fn, args, kwargs)
        if isinstance(target, BaseTunnel):
            return self._append(target, queued)
        if not isinstance(target, Group):
            raise TypeError("Queue.call takes a tunnel or a Group, not %r" % (target,))
        combined = AsyncResult()
        tunnels = list(target)
        done: Dict[str, Any] = {}

        def collect(host: str, value: Any) -> None:
            done[host] = value
            if len(done) == len(tunnels):
                combined._set(GroupResult((t.host, done[t.host]) for t in tunnels))

        if not tunnels:
            combined._set(GroupResult())
        for tunnel in tunnels:
            self._append(tunnel, queued).with_callback(functools.partial(collect, tunnel.host))
            if target._driver is not None:
                self._sharded[tunnel.host] = target._driver
        return combined

    def _append(self, tunnel: BaseTunnel, queued: _Queued) -> AsyncResult:
        known = self._fifos.get(tunnel.host)
        if known is not None and known[0] is not tunnel:
            raise ValueError("two different tunnels are named %r" % tunnel.host)
        result = AsyncResult()
        self._fifos.setdefault(tunnel.host, (tunnel, collections.deque()))[1].append((queued, result))
        return result

    def run(self, timeout: Optional[float] = None) -> None:
        """Run every queued call; each host works through its own FIFO, all hosts at once.

        ``timeout`` bounds each call. Returns when every FIFO is empty."""
        fifos = list(self._fifos.values())
        sharded, self._sharded = self._sharded, {}
        self._fifos = collections.OrderedDict()
        calls: Dict[int, Call] = {}  # each queued call pickled once, for every tunnel it was queued on

        def prepared(queued: _Queued) -> Call:
            call = calls.get(id(queued))
            if call is None:
                call = calls[id(queued)] = Call.for_hosts(*queued, timeout=timeout)
            return call

        here = [(tunnel, fifo) for tunnel, fifo in fifos if tunnel.host not in sharded]
        by_driver: Dict[int, Tuple["Driver", List[Tuple[str, Deque]]]] = {}
        for tunnel, fifo in fifos:
            if tunnel.host in sharded:
                driver = sharded[tunnel.host]
                by_driver.setdefault(id(driver), (driver, []))[1].append((tunnel.host, fifo))
        in_shards = [gevent.spawn(_run_in_shards, driver, hosts, prepared) for driver, hosts in by_driver.values()]
        try:
            job = _Fifos({tunnel.host: collections.deque((prepared(queued), result) for queued, result in fifo)
                          for tunnel, fifo in here})
            # every FIFO at once: the bound is their number (and the open-files limit is left alone)
            for _, value in fan_out(job, [tunnel for tunnel, _ in here], max(1, len(here))):
                if isinstance(value, ErrorResult) and value.exception is not None:
                    raise value.exception  # not a call's failure (those are values) but a callback's
            gevent.joinall(in_shards, raise_error=True)
        finally:
            gevent.killall(in_shards)


def _run_in_shards(driver: "Driver", hosts: List[Tuple[str, Deque]], prepared: Callable[[_Queued], Call]) -> None:
    """The FIFOs of a sharded Group's hosts, each worked through in its shard (``Calls``); each
    call's AsyncResult is set, in order, when its host finished (a host that failed as a whole,
    its shard lost, gives every call of its FIFO that failure)."""
    results = {host: [result for _, result in fifo] for host, fifo in hosts}
    job = Calls({host: tuple(prepared(queued) for queued, _ in fifo) for host, fifo in hosts})
    for host, values in driver.iter_job(job, [host for host, _ in hosts]):
        for index, result in enumerate(results[host]):
            result._set(values if isinstance(values, ErrorResult) else values[index])
