"""The driver: a group's hosts spread over shards, their event streams merged into one. API layer.

``Driver`` places each host in one shard and keeps it there (its tunnel stays open in that
shard between fan-outs), hands each shard its part of a job (``core.RunOrder``) and merges
what the shards send back into the engine's ``(host, value)`` stream, as each host finishes,
whichever shard it is in. Progress is summed and given to the user's callable here; a
deadline crosses as seconds left (``jobs.seconds_left``); closing the stream (Ctrl-C, a
``break``) cancels every shard's run. A shard that dies fails its unfinished hosts with
``ShardLost`` naming it; the next fan-out starts a new shard for them.

How a shard runs is a backend's business (the seam):

    backend.start(spec, sink) -> handle       start a shard from a ``core.ShardSpec``
    handle.label                              "shard 2 (pid 4242 on this machine)": for ShardLost
    handle.run(run_id, order)                 send it a ``RunOrder`` (returns at once)
    handle.cancel(run_id)                     stop that run (late events are dropped here)
    handle.close()                            stop the shard, its tunnels closed; wait for it

and the backend reports, in the driver's hub, through the ``sink`` it was given:

    sink.event(run_id, event)                 each of ``ShardCore.events``' events
    sink.answer(kind, key) -> value           a shard's question for the import service (``ASKS``)
    sink.log(method, fields)                  a log event of the shard's (``logs.forward``/``replay``)
    sink.lost(why)                            the shard went away (after ``close`` too: a run still
                                              waiting on it ends, its hosts ShardLost)

``process.ProcessBackend`` runs shards as local processes; ``ray.py`` as Ray actors.
"""

import dataclasses
import io
import itertools
import os
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import gevent
import gevent.queue
import structlog

from chopsticks import logs
from chopsticks.errors import CallTimeout, ClusterError, ShardLost, WrongThread
from chopsticks.jobs import Calls, Fetch, Job, Put, deadline_end, seconds_left
from chopsticks.modules import ModuleServer, shared_server
from chopsticks.results import ErrorResult
from chopsticks.shards.core import Event, HostSpec, RunOrder, ShardSpec, preload_of, preloads_for

# How long past its deadline the driver waits for a shard's own deadline results (the
# shard ends its run at the same instant; this covers the hop back, and a shard that hangs).
DEADLINE_GRACE = 5.0


class Sink(Protocol):
    def event(self, run_id: int, event: Event) -> None: ...
    def answer(self, kind: str, key: Any) -> Any: ...
    def log(self, method: str, fields: Dict[str, Any]) -> None: ...
    def lost(self, why: str) -> None: ...


class Handle(Protocol):
    label: str

    def run(self, run_id: int, order: RunOrder) -> None: ...
    def cancel(self, run_id: int) -> None: ...
    def close(self) -> None: ...


class Backend(Protocol):
    local_files: bool  # whether its shards see this machine's files (a Put's source, a Fetch's destination)

    def start(self, spec: ShardSpec, sink: Sink) -> Handle: ...
    def cores(self) -> Optional[int]: ...  # the CPUs its shards can use ('auto'); None: this machine's


# A shard's questions, answered by the driver's import service for the hosts' ``serve`` list:
# the driver alone decides what is served, as for its own tunnels.
ASKS: Dict[str, Callable[[ModuleServer, Any], Any]] = {
    "preload": preload_of,
    "import": lambda server, payload: server.answer_import(payload, set(), "a shard"),
    "data": lambda server, payload: server.answer_data(payload),
}


def split(total: int, parts: int) -> List[int]:
    """``total`` in ``parts`` shares as equal as whole numbers allow, each at least 1."""
    return [max(1, total // parts + (1 if index < total % parts else 0)) for index in range(parts)]


def portable(job: Job, hosts: Sequence[str], local_files: bool) -> Job:
    """``job`` as it can cross to a shard: a Put from a file object carries the file's bytes
    (read once, here), local paths are made absolute here (a shard's working directory is the
    driver's when it started) and any ``progress`` callable stays in the driver. A Put from a
    path is started (and closed) here first, so that a file that cannot be read raises here, as
    without shards. Shards that do not see this machine's files (``local_files`` False: Ray
    actors on other nodes) take no Put from a path and no Fetch: ClusterError."""
    if isinstance(job, Calls):  # a queue's FIFOs: each job in them as it would cross alone
        return Calls({host: tuple(portable(one, [host], local_files) for one in fifo)
                      for host, fifo in job.fifos.items()})
    from_path = isinstance(job, Put) and isinstance(job.local_path, (str, os.PathLike))
    if not local_files and (from_path or isinstance(job, Fetch)):
        raise ClusterError("put and fetch on a group with cluster= would read and write the files of each Ray "
                           "node, not this machine's: use workers= (shard processes on this machine) for files, "
                           "or put from a file object (its bytes go to the nodes)")
    if isinstance(job, Put):
        if from_path:
            job.start(hosts).close()  # a missing or unreadable file is one error, at once
            job = dataclasses.replace(job, local_path=os.path.abspath(job.local_path))
        else:
            job = dataclasses.replace(job, local_path=io.BytesIO(job.local_path.read()))
    if isinstance(job, Fetch):
        job = dataclasses.replace(job, local_paths={
            host: os.path.abspath(path) if isinstance(path, (str, os.PathLike)) else path
            for host, path in job.local_paths.items()})
    if getattr(job, "progress", None) is not None:
        job = dataclasses.replace(job, progress=None)  # type: ignore[type-var]
    return job


class _ShardSink:
    """What one shard's backend reports to: events into the runs' queues, its questions to the
    import service, its loss to every run it had hosts in."""

    def __init__(self, driver: "Driver", index: int):
        self.driver = driver
        self.index = index
        self.handle: Optional[Handle] = None

    def event(self, run_id: int, event: Event) -> None:
        queue = self.driver.runs.get(run_id)
        if queue is not None:  # else a run that was closed: its late events go nowhere
            queue.put((self.index, event))

    def answer(self, kind: str, key: Any) -> Any:
        """The import service's answer, for a ``serve`` list of a host placed in this shard
        only: the driver, not the shard, decides what may be served."""
        serve, what = key
        if serve not in self.driver.serves[self.index]:
            raise LookupError("%s asked with serve=%r, which none of its hosts has" % (self.handle and
                                                                                      self.handle.label, serve))
        return ASKS[kind](shared_server(serve), what)

    def log(self, method: str, fields: Dict[str, Any]) -> None:
        logs.replay(method, fields)

    def lost(self, why: str) -> None:
        label = self.handle.label if self.handle is not None else "shard %d" % self.index
        self.driver.lost(self.index, self, "%s was lost: %s" % (label, why), self.handle)


class Driver:
    """Hosts placed over ``workers`` shards that ``backend`` starts; ``handshakes`` (the
    group's bound on SSH handshakes) and ``concurrency`` (None: each shard's own default) are
    split over them, so the whole fan-out keeps the group's bounds."""

    def __init__(self, backend: Backend, workers: int, handshakes: int, concurrency: Optional[int] = None):
        self.backend = backend
        self.workers = workers
        self.handshakes = split(handshakes, workers)
        self.concurrency: List[Optional[int]] = [None] * workers
        if concurrency:
            self.concurrency = list(split(concurrency, workers))
        self.specs: Dict[str, HostSpec] = {}
        self.placed: Dict[str, int] = {}
        self.shards: List[Optional[Tuple[Handle, _ShardSink]]] = [None] * workers
        self.known: List[set] = [set() for _ in range(workers)]  # hosts each live shard was given
        self.serves: List[set] = [set() for _ in range(workers)]  # the serve= lists of each shard's hosts
        self.runs: Dict[int, gevent.queue.Queue] = {}
        self._ids = itertools.count(1)
        self._thread = threading.current_thread()

    def place(self, hosts: Sequence[HostSpec]) -> None:
        """Give each new host a shard (the one with the fewest); a host placed stays there."""
        counts = [0] * self.workers
        for index in self.placed.values():
            counts[index] += 1
        for host in hosts:
            if host.name not in self.placed:
                index = counts.index(min(counts))
                self.placed[host.name] = index
                self.specs[host.name] = host
                self.serves[index].add(tuple(host.tunnel_options.serve))
                counts[index] += 1

    def _shard(self, index: int) -> Tuple[Handle, List[HostSpec]]:
        """Shard ``index``, started if it is not running; and the hosts it is new to."""
        mine = [spec for name, spec in self.specs.items() if self.placed[name] == index]
        entry = self.shards[index]
        if entry is None:
            sink = _ShardSink(self, index)
            spec = ShardSpec("shard %d" % (index + 1), tuple(mine), self.handshakes[index], self.concurrency[index],
                             structlog.is_configured())
            handle = self.backend.start(spec, sink)
            sink.handle = handle
            self.shards[index] = entry = (handle, sink)
            self.known[index] = {host.name for host in mine}
        added = [host for host in mine if host.name not in self.known[index]]
        self.known[index].update(host.name for host in added)
        return entry[0], added

    def _check_thread(self) -> None:
        """Refuse a fan-out from an OS thread other than the one whose hub runs the shards'
        readers: nothing would wake it there (as ``BaseTunnel``'s own check)."""
        if not any(self.shards):
            self._thread = threading.current_thread()
        elif self._thread is not threading.current_thread():
            raise WrongThread("this sharded group's shards run in the gevent hub of thread %r and cannot be used "
                              "from thread %r: use it from that thread, or close() it first"
                              % (self._thread.name, threading.current_thread().name))

    def lost(self, index: int, sink: _ShardSink, why: str, handle: Optional[Handle] = None) -> None:
        """Shard ``index`` (``handle``) went away: the runs it had hear it; the next fan-out
        starts a new one."""
        entry = self.shards[index]
        if entry is not None and entry[1] is sink:
            self.shards[index] = None
        for queue in self.runs.values():
            queue.put((index, ("lost", why, handle)))

    def iter_job(self, job: Job, hosts: Sequence[str], deadline: Optional[float] = None,
                 ends_at: Optional[float] = None) -> Iterator[Tuple[str, Any]]:
        """``jobs.fan_out``'s stream for ``job`` on ``hosts`` (placed already), across the
        shards: ``(host, value or ErrorResult)`` as each finishes, every host once."""
        self._check_thread()
        ends_at = deadline_end(deadline) if ends_at is None else ends_at
        progress = getattr(job, "progress", None)
        job = portable(job, hosts, self.backend.local_files)
        preloads = preloads_for(job, {tuple(spec.tunnel_options.serve): shared_server(spec.tunnel_options.serve)
                                      for spec in (self.specs[name] for name in hosts)})
        parts: Dict[int, List[str]] = {}
        for name in hosts:
            parts.setdefault(self.placed[name], []).append(name)
        run_id = next(self._ids)
        queue: gevent.queue.Queue = gevent.queue.Queue()
        self.runs[run_id] = queue
        pending = {name: self.placed[name] for name in hosts}
        running: Dict[int, Handle] = {}
        stated = "" if deadline is None else " of %ss" % deadline
        try:
            for index, names in parts.items():
                try:
                    handle, added = self._shard(index)
                except OSError as exc:  # the shard could not be started
                    queue.put((index, ("lost", "shard %d could not start: %s" % (index + 1, exc), None)))
                    continue
                running[index] = handle
                try:
                    handle.run(run_id, RunOrder(job, tuple(names), deadline, seconds_left(ends_at),
                                                progress is not None, preloads, tuple(added)))
                except OSError:
                    pass  # it is going away: its backend reports it lost (to this run too) and why
            while pending:
                left = seconds_left(ends_at)
                wait = None if left is None else left + DEADLINE_GRACE
                try:
                    index, event = queue.get(timeout=wait)
                except gevent.queue.Empty:
                    break
                kind = event[0]
                if kind == "result" and event[1] in pending:
                    del pending[event[1]]
                    yield event[1], event[2]
                elif kind == "progress" and progress is not None:
                    progress(event[1])
                elif kind == "lost" and event[2] is not running.get(index):
                    continue  # a shard this run did not use (one closed before it, at the same place)
                elif kind in ("lost", "done"):
                    running.pop(index, None)
                    why = event[1] if kind == "lost" else "shard %d ended its run early" % (index + 1)
                    for name in [name for name, where in pending.items() if where == index]:
                        del pending[name]
                        yield name, ErrorResult.from_exception(ShardLost("[%s] %s" % (name, why)))
        finally:
            del self.runs[run_id]
            for handle in running.values():
                if pending:
                    handle.cancel(run_id)
        for name in list(pending):
            yield name, ErrorResult.from_exception(CallTimeout("[%s] the fan-out deadline%s passed first"
                                                               % (name, stated)))

    def close(self) -> None:
        """Stop every shard (their tunnels close); the next fan-out starts new ones."""
        entries = [entry for entry in self.shards if entry is not None]
        self.shards = [None] * self.workers
        gevent.joinall([gevent.spawn(handle.close) for handle, _ in entries])


def count_workers(workers: Any, hosts: int, cores: Optional[int] = None) -> int:
    """How many shards ``workers`` means for ``hosts`` hosts: a whole number (capped by the
    hosts), ``'auto'`` (``cores``, by default this machine's, capped by the hosts) or None
    (1: no shards). ValueError names the parameter for anything else."""
    if workers is None:
        return 1
    if workers == "auto":
        return max(1, min(cores or os.cpu_count() or 1, hosts))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError("workers must be a whole number of at least 1 or 'auto', got %r" % (workers,))
    return max(1, min(workers, hosts))


def spec_of(tunnel: Any) -> HostSpec:
    """A tunnel as a shard can make it again: an ``SSHTunnel`` with its name and options and
    the shared import service. Any other tunnel (a ``Local``, a ``Docker``, one with its own
    ``modules=``) lives in this process and cannot move: ValueError, saying so."""
    from chopsticks.ssh_tunnel import SSHTunnel

    if type(tunnel) is not SSHTunnel or tunnel.modules is not shared_server(tunnel.tunnel_options.serve):
        raise ValueError("workers= spreads SSH hosts over shard processes, which make their own tunnels from "
                         "the host names and options; %r lives in this process and cannot move to a shard: "
                         "put it in a Group without workers= (or workers=1)" % (tunnel,))
    return HostSpec(tunnel.host, tunnel.options, tunnel.tunnel_options)


def backend_for(cluster: Any) -> Backend:
    """Where shards run: local processes (``cluster`` None), or actors on the Ray cluster
    ``cluster`` names (``ray.RayBackend``: an address, or True for ``RAY_ADDRESS``)."""
    if cluster is None:
        from chopsticks.shards.process import ProcessBackend
        return ProcessBackend()
    from chopsticks.shards.ray import RayBackend
    return RayBackend(cluster)


def for_group(workers: int, handshakes: int, concurrency: Optional[int], backend: Optional[Backend] = None
              ) -> Driver:
    """A driver of ``workers`` shards (local processes unless ``backend`` says otherwise),
    the group's bounds split over them (no more shards than the bounds have units)."""
    workers = min(workers, handshakes, concurrency or workers)
    return Driver(backend or backend_for(None), workers, handshakes, concurrency)
