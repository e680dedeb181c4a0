"""Queue: per-host FIFOs of different operations, run together. API layer (the original's ``Queue``).

``queue.call(target, fn, ...)``, ``queue.put(target, local_path, ...)``,
``queue.fetch(target, remote_path, ...)`` and ``queue.connect(target)`` append to the FIFO of
each host of ``target`` (a tunnel or a Group) and return an ``AsyncResult``; ``queue.run()``
makes each queued operation's job once (a call pickled as its arguments are then, a put's
file opened once for all its hosts; in a sharded Group's shards, once per host) and works
every host's FIFO at once, in order, so fast hosts never wait for slow ones, through the
same fan-out engine and jobs as ``Group``
(``jobs.fan_out``, ``Call``/``Put``/``Fetch``/``Connect``), bounded by the number of FIFOs
only. A failed operation's value is an ErrorResult and the host goes on with its next.

Operations queued while ``run()`` runs (from a callback) are run by that run: appended to the
FIFO being worked through if their host has one, else started at once in a fan-out of their
own; a host's operations never overlap and keep their order. The hosts of a sharded Group
(``workers=``, ``cluster=``) work through their FIFOs in their shards (a ``jobs.Calls`` job):
their values are set as each host finishes its FIFO, in order.
"""

import collections
import dataclasses
import functools
import os
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, Union

import gevent
import gevent.event

from chopsticks import hub
from chopsticks.group import Group
from chopsticks.jobs import Call, Calls, Connect, Fetch, Job, Put, Run, Stateless, fan_out
from chopsticks.results import ErrorResult, GroupResult
from chopsticks.tunnel import BaseTunnel

if TYPE_CHECKING:
    from chopsticks.shards.driver import Driver

Target = Union[BaseTunnel, Group]
_NOT_READY = object()


class AsyncResult:
    """The result of a queued operation, once ``Queue.run()`` has run it: ``.value``."""

    def __init__(self) -> None:
        self._value: Any = _NOT_READY
        self._callbacks: List[Callable[[Any], None]] = []

    @property
    def ready(self) -> bool:
        return self._value is not _NOT_READY

    @property
    def value(self) -> Any:
        """The operation's value (an ErrorResult if it failed); ValueError before the queue ran it."""
        if self._value is _NOT_READY:
            raise ValueError("this operation has not run yet: call queue.run()")
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


def _bounded(job: Job, timeout: Optional[float]) -> Job:
    """A put's or fetch's job bounded by the run's ``timeout`` when it has none of its own."""
    if timeout is not None and isinstance(job, (Put, Fetch)) and job.timeout is None:
        return dataclasses.replace(job, timeout=timeout)
    return job


class _Op:
    """One queued operation for the hosts it was queued on: its job made once (``prepare``,
    when a run first takes it), started once for all of them when the first host runs it (a
    put's file opened once), and closed when the last is done or the run ends."""

    def __init__(self, make: Callable[[Optional[float]], Job], hosts: Sequence[str]):
        self.make = make
        self.hosts = list(hosts)
        self.left = len(self.hosts)
        self.job: Optional[Job] = None
        self._run: Optional[Run] = None
        self._failed: Optional[ErrorResult] = None

    def prepare(self, timeout: Optional[float]) -> Job:
        if self.job is None:
            self.job = self.make(timeout)
        return self.job

    def run(self, tunnel: BaseTunnel) -> Any:
        """One host's part: its value, or an ErrorResult (a put whose file went: each host's)."""
        assert self.job is not None
        try:
            if self._run is None and self._failed is None:
                try:
                    self._run = self.job.start(self.hosts)
                except Exception as exc:
                    self._failed = ErrorResult.from_exception(exc)
            if self._failed is not None:
                return self._failed
            assert self._run is not None
            try:
                return self._run.run(tunnel)
            except Exception as exc:  # a call's failure, or a local file's: data, as a Group gives it
                return ErrorResult.from_exception(exc)
        finally:
            self.left -= 1
            if self.left == 0:
                self.close()

    def close(self) -> None:
        started, self._run = self._run, None
        if started is not None:
            started.close()


_Entry = Tuple[_Op, AsyncResult]


class _Fifos(Stateless):
    """A run's local hosts as one job: each tunnel works through its FIFO (``queue._working``),
    which may grow while it does; what a failing callback leaves is queued again."""

    def __init__(self, queue: "Queue"):
        self.queue = queue

    def run(self, tunnel: BaseTunnel) -> None:
        fifo = self.queue._working[tunnel.host][1]
        try:
            while fifo:
                op, result = fifo.popleft()
                result._set(op.run(tunnel))
        except Exception as exc:  # a callback's: the run ends with it, and starts nothing more
            if self.queue._failure is None:
                self.queue._failure = exc
            raise
        finally:
            self.queue._finished(tunnel, fifo)


class Queue:
    """Per-host FIFOs of operations; ``run()`` runs them all, each host in its own order."""

    def __init__(self) -> None:
        self._fifos: "collections.OrderedDict[str, Tuple[BaseTunnel, Deque[_Entry]]]" = collections.OrderedDict()
        self._sharded: Dict[str, "Driver"] = {}  # a host of a sharded Group -> the driver of its shards
        # while run() runs: the FIFOs being worked through here, the hosts under way (here or
        # in shards), the operations it made, and what wakes it when more is queued
        self._working: Dict[str, Tuple[BaseTunnel, Deque[_Entry]]] = {}
        self._busy: Set[str] = set()
        self._ops: Dict[int, _Op] = {}
        self._wake: Optional[gevent.event.Event] = None
        self._timeout: Optional[float] = None
        self._failure: Optional[BaseException] = None  # what a callback raised: the run ends with it

    # -- queueing -------------------------------------------------------------------------

    def call(self, target: Target, fn, /, *args, **kwargs) -> AsyncResult:
        """Queue ``fn(*args, **kwargs)`` on a tunnel, or on every tunnel of a Group (pickled
        by ``run()``, once for all of them).

        For a Group, the AsyncResult's value is a GroupResult, set once every host ran it."""
        return self._enqueue("call", target, lambda timeout: Call.for_hosts(fn, args, kwargs, timeout=timeout))

    def put(self, target: Target, local_path, remote_path: Optional[str] = None, mode: Optional[int] = None,
            **options) -> AsyncResult:
        """Queue ``BaseTunnel.put(local_path, remote_path, mode, **options)`` on a tunnel or a
        Group (``{host}`` in ``remote_path`` becomes each host's name; the file is read once
        for all of a Group's hosts). A missing or unreadable local file, or a bad ``mode``,
        raises here and queues nothing."""
        put = Put(local_path, remote_path, mode, **options)  # a bad mode or option: refused now
        if isinstance(local_path, (str, os.PathLike)):
            os.stat(local_path)  # FileNotFoundError now, as Group.put gives it
            if not os.path.isdir(local_path):
                with open(local_path, "rb"):  # PermissionError now
                    pass
        return self._enqueue("put", target, functools.partial(_bounded, put))

    def fetch(self, target: Target, remote_path: str, local_path=None, **options) -> AsyncResult:
        """Queue ``BaseTunnel.fetch(remote_path, local_path, **options)`` on a tunnel, or on
        a Group to ``local_path.format(host=...)`` for each host (None: a temporary file
        each; a template that gives two hosts one path: ValueError here)."""
        tunnels = self._tunnels("fetch", target)
        if isinstance(target, Group):
            fetch = Fetch.for_hosts(remote_path, local_path, [t.host for t in tunnels], **options)
        else:
            fetch = Fetch(remote_path, {target.host: local_path}, **options)
        return self._enqueue("fetch", target, functools.partial(_bounded, fetch))

    def connect(self, target: Target) -> AsyncResult:
        """Queue a connect of a tunnel, or of each of a Group's (value None, or an ErrorResult)."""
        return self._enqueue("connect", target, lambda timeout: Connect())

    def _tunnels(self, what: str, target: Target) -> List[BaseTunnel]:
        if isinstance(target, BaseTunnel):
            return [target]
        if isinstance(target, Group):
            return list(target)
        raise TypeError("Queue.%s takes a tunnel or a Group, not %r" % (what, target))

    def _enqueue(self, what: str, target: Target, make: Callable[[Optional[float]], Job]) -> AsyncResult:
        tunnels = self._tunnels(what, target)
        for tunnel in tunnels:  # checked for all before any is queued
            known = self._fifos.get(tunnel.host) or self._working.get(tunnel.host)
            if known is not None and known[0] is not tunnel:
                raise ValueError("two different tunnels are named %r" % tunnel.host)
        op = _Op(make, [t.host for t in tunnels])
        if isinstance(target, BaseTunnel):
            return self._append(target, op)
        combined = AsyncResult()
        done: Dict[str, Any] = {}

        def collect(host: str, value: Any) -> None:
            done[host] = value
            if len(done) == len(tunnels):
                combined._set(GroupResult((t.host, done[t.host]) for t in tunnels))

        if not tunnels:
            combined._set(GroupResult())
        for tunnel in tunnels:
            if target._driver is not None:
                self._sharded[tunnel.host] = target._driver
            self._append(tunnel, op).with_callback(functools.partial(collect, tunnel.host))
        return combined

    def _append(self, tunnel: BaseTunnel, op: _Op) -> AsyncResult:
        result = AsyncResult()
        working = self._working.get(tunnel.host)
        if working is not None:  # its FIFO is being worked through: the run takes this next
            self._prepared(op)
            working[1].append((op, result))
            return result
        self._fifos.setdefault(tunnel.host, (tunnel, collections.deque()))[1].append((op, result))
        if self._wake is not None:  # queued while running: the run starts it at once
            self._wake.set()
        return result

    # -- running --------------------------------------------------------------------------

    def run(self, timeout: Optional[float] = None) -> None:
        """Run every queued operation; each host works through its own FIFO, all hosts at
        once, and what callbacks queue meanwhile is run too.

        ``timeout`` bounds each call (and each put or fetch without a timeout of its own).
        Returns when every FIFO is empty. An exception raised by a callback ends the run and
        is raised here; what its host had still queued stays queued.

        Where its tunnels run (``chopsticks.hub``): from a plain thread other than the main
        one, or under an asyncio loop, or with a tunnel the hub thread runs, the whole run is
        handed to the hub thread (its callbacks then run there); a queue with hosts of a
        sharded group runs here."""
        there = None if self._sharded else hub.route(tunnel.thread for tunnel, _ in self._fifos.values())
        if there is not None:
            return hub.run(there, self.run, timeout)
        if self._wake is not None:
            raise RuntimeError("this queue is running already (queue more from the callback instead)")
        self._wake, self._timeout = wake, _ = gevent.event.Event(), timeout
        workers: List[gevent.Greenlet] = []
        try:
            while True:
                if self._failure is not None:
                    raise self._failure
                for worker in [worker for worker in workers if worker.dead]:
                    worker.get()  # a callback's exception goes on from here
                    workers.remove(worker)
                batch = [host for host in self._fifos if host not in self._busy]
                if batch:
                    workers.append(gevent.spawn(self._run_batch, [self._take(host) for host in batch]))
                    workers[-1].link(lambda _: wake.set())
                elif not workers:
                    break
                else:
                    wake.wait()
                    wake.clear()
        finally:
            gevent.killall(workers)
            for op in self._ops.values():
                op.close()
            for host in list(self._working):
                tunnel, fifo = self._working[host]
                self._finished(tunnel, fifo)
            self._ops, self._busy, self._wake, self._failure = {}, set(), None, None

    async def arun(self, timeout: Optional[float] = None) -> None:
        """``run``, awaited: the run goes on in the hub thread (``chopsticks.aio``), its
        callbacks there; cancelling the task ends it as a killed run does."""
        from chopsticks import aio
        await aio.run(self.run, timeout)

    def _prepared(self, op: _Op) -> None:
        op.prepare(self._timeout)
        self._ops[id(op)] = op

    def _take(self, host: str) -> Tuple[BaseTunnel, Deque[_Entry]]:
        """A host's FIFO, taken by the run (its operations made now): the host is busy."""
        tunnel, fifo = self._fifos.pop(host)
        for op, _ in fifo:
            self._prepared(op)
        self._busy.add(host)
        return tunnel, fifo

    def _finished(self, tunnel: BaseTunnel, fifo: Deque[_Entry]) -> None:
        """A host's FIFO ended (or was stopped: what is left of it goes back in front)."""
        self._working.pop(tunnel.host, None)
        self._busy.discard(tunnel.host)
        if fifo:
            later = self._fifos.pop(tunnel.host, (tunnel, collections.deque()))[1]
            fifo.extend(later)
            self._fifos[tunnel.host] = (tunnel, fifo)
            self._fifos.move_to_end(tunnel.host, last=False)
        if self._wake is not None:
            self._wake.set()

    def _run_batch(self, taken: List[Tuple[BaseTunnel, Deque[_Entry]]]) -> None:
        """Hosts taken together: those here in one fan-out, those in shards by their drivers."""
        here = [(tunnel, fifo) for tunnel, fifo in taken if tunnel.host not in self._sharded]
        by_driver: Dict[int, Tuple["Driver", List[Tuple[BaseTunnel, Deque[_Entry]]]]] = {}
        for tunnel, fifo in taken:
            driver = self._sharded.get(tunnel.host)
            if driver is not None:
                by_driver.setdefault(id(driver), (driver, []))[1].append((tunnel, fifo))
        in_shards = [gevent.spawn(self._run_in_shards, driver, hosts) for driver, hosts in by_driver.values()]
        try:
            for tunnel, fifo in here:
                self._working[tunnel.host] = (tunnel, fifo)
            # every FIFO at once: the bound is their number (and the open-files limit is left alone)
            for _, value in fan_out(_Fifos(self), [tunnel for tunnel, _ in here], max(1, len(here))):
                if isinstance(value, ErrorResult) and value.exception is not None:
                    raise value.exception  # not an operation's failure (those are values) but a callback's
            gevent.joinall(in_shards, raise_error=True)
        finally:
            gevent.killall(in_shards)

    def _run_in_shards(self, driver: "Driver", hosts: List[Tuple[BaseTunnel, Deque[_Entry]]]) -> None:
        """The FIFOs of a sharded Group's hosts, each worked through in its shard (``Calls``);
        each operation's AsyncResult is set, in order, when its host finished (a host that
        failed as a whole, its shard lost, gives every operation of its FIFO that failure)."""
        fifos = {tunnel.host: list(fifo) for tunnel, fifo in hosts}
        for _, fifo in hosts:
            fifo.clear()
        job = Calls({host: tuple(op.prepare(self._timeout) for op, _ in entries) for host, entries in fifos.items()})
        left = {tunnel.host: tunnel for tunnel, _ in hosts}
        try:
            for host, values in driver.iter_job(job, list(fifos)):
                for index, (_, result) in enumerate(fifos[host]):
                    result._set(values if isinstance(values, ErrorResult) else values[index])
                self._finished(left.pop(host), collections.deque())
        except Exception as exc:  # the job could not go to the shards at all (a put with cluster=, a file gone)
            failure = ErrorResult.from_exception(exc)
            for host, tunnel in left.items():  # as a value for each operation, as without shards
                for _, result in fifos[host]:
                    result._set(failure)
                self._finished(tunnel, collections.deque())
