"""Queue: per-host FIFOs of different calls, run together. API layer (the original's ``Queue``).

``queue.call(target, fn, ...)`` appends to the FIFO of each host of ``target`` (a tunnel or a
Group) and returns an ``AsyncResult``; ``queue.run()`` works every host's FIFO at once, in
order, so fast hosts never wait for slow ones, through the same bounded fan-out engine as
``Group`` (``jobs.fan_out``). A failed call's value is an ``ErrorResult`` and the host goes
on with its next call.
"""

import collections
import dataclasses
import functools
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from chopsticks.errors import ChopsticksError
from chopsticks.group import Group, default_concurrency
from chopsticks.jobs import Call, Job, fan_out
from chopsticks.results import ErrorResult, GroupResult
from chopsticks.tunnel import BaseTunnel

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


class _Fifos(Job):
    """The queue's work as one job: each tunnel works through its own FIFO of prepared calls,
    in order, setting each call's AsyncResult (a failed call's value is an ErrorResult)."""

    def __init__(self, fifos: Dict[str, Deque[Tuple[Call, AsyncResult]]], timeout: Optional[float]):
        self.fifos = fifos
        self.timeout = timeout

    def run(self, tunnel: BaseTunnel) -> None:
        fifo = self.fifos[tunnel.host]
        while fifo:
            call, result = fifo.popleft()
            if call.timeout != self.timeout:
                call = dataclasses.replace(call, timeout=self.timeout)
            try:
                value = call.run(tunnel)
            except ChopsticksError as exc:
                value = ErrorResult.from_exception(exc)
            result._set(value)


class Queue:
    """Per-host FIFOs of calls; ``run()`` runs them all, each host in its own order."""

    def __init__(self) -> None:
        self._fifos: "collections.OrderedDict[str, Tuple[BaseTunnel, Deque]]" = collections.OrderedDict()

    def call(self, target: Union[BaseTunnel, Group], fn, /, *args, **kwargs) -> AsyncResult:
        """Queue ``fn(*args, **kwargs)`` on a tunnel, or on every tunnel of a Group (pickled
        once for all of them).

        For a Group, the AsyncResult's value is a GroupResult, set once every host ran it."""
        if isinstance(target, BaseTunnel):
            return self._append(target, Call.for_hosts(fn, args, kwargs))
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
        call = Call.for_hosts(fn, args, kwargs)
        for tunnel in tunnels:
            self._append(tunnel, call).with_callback(functools.partial(collect, tunnel.host))
        return combined

    def _append(self, tunnel: BaseTunnel, call: Call) -> AsyncResult:
        known = self._fifos.get(tunnel.host)
        if known is not None and known[0] is not tunnel:
            raise ValueError("two different tunnels are named %r" % tunnel.host)
        result = AsyncResult()
        self._fifos.setdefault(tunnel.host, (tunnel, collections.deque()))[1].append((call, result))
        return result

    def run(self, timeout: Optional[float] = None) -> None:
        """Run every queued call; each host works through its own FIFO, all hosts at once.

        ``timeout`` bounds each call. Returns when every FIFO is empty."""
        fifos = list(self._fifos.values())
        self._fifos = collections.OrderedDict()
        job = _Fifos({tunnel.host: fifo for tunnel, fifo in fifos}, timeout)
        for _, value in fan_out(job, [tunnel for tunnel, _ in fifos], default_concurrency()):
            if isinstance(value, ErrorResult) and value.exception is not None:
                raise value.exception  # not a call's failure (those are values) but a callback's
