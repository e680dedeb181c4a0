"""ShardCore: what runs inside one shard, in its own gevent hub. Controller-side (a shard's half).

A shard owns a share of a group's hosts. It is made from a ``ShardSpec`` (plain, picklable
data: each host's name with its group's ``SSHOptions`` and ``TunnelOptions``, its share of the
handshake bound and of the concurrency) and keeps its tunnels open between fan-outs.
``ShardCore.events(order)`` runs one job (``RunOrder``) through the one engine,
``jobs.fan_out``, on its tunnels and yields *events*, plain data that pickles:

    ("result", host, value)     a host finished (``value``: its value or ErrorResult)
    ("progress", nbytes)        bytes moved by a Put or Fetch since the last such event
    ("done",)                   every host of the order has its result

Closing the generator cancels the run (the engine stops the hosts still running).

The shard serves its remotes' imports by asking the driver, which alone decides what is
served (``ShardModules``: the interface ``connection.py`` uses, answers cached per fan-out, so
an edited file is served anew on the next one). ``ask(kind, key)`` is the backend's way to
reach the driver; ``ASKS`` in ``driver.py`` answers it with the driver's ``ModuleServer``.

``ShardSide`` is a shard's half of the conversation with its driver, whatever carries it (a
process's pipe, a Ray actor's methods): the core, its runs by id, its questions by id, and
what it sends:

    ("event", run_id, event)      each of ``ShardCore.events``' events
    ("ask", ask_id, kind, key)    a question for the driver's import service
    ("log", method, fields)       with ``ShardSpec.logs`` (``logs.forward``)

while the driver's ``run``, ``cancel`` and ``answer`` (``answer_for``: ``(ok, value)``) come in
as calls of its methods, in the shard's hub.
"""

import dataclasses
from typing import Any, Callable, Dict, FrozenSet, Iterator, List, Optional, Sequence, Set, Tuple

import itertools

import gevent
import gevent.event
import gevent.queue
import msgpack

from chopsticks import logs
from chopsticks.jobs import Call, Calls, Job, deadline_end, default_concurrency, fan_out
from chopsticks.options import TunnelOptions
from chopsticks.results import ErrorResult
from chopsticks.transports.ssh import HandshakeSlots
from chopsticks.transports.ssh_options import SSHOptions
from chopsticks.ssh_tunnel import SSHTunnel
from chopsticks.wire import protocol

Event = Tuple[Any, ...]
Preload = Tuple[FrozenSet[str], Optional[bytes]]  # the modules' names, their packed MODULES payload
Ask = Callable[[str, Any], Any]  # ask(kind, key) -> the driver's answer, waiting for it

# How often a running Put or Fetch reports its bytes to the driver: one event per interval,
# not one per chunk (a chunk is 32 KiB; at 200 MiB/s that would be 6,400 events a second).
PROGRESS_INTERVAL = 0.1


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """One host as a shard starts it: its name and its group's options (shared objects, so
    a shard's spec pickles each options object once)."""

    name: str
    options: SSHOptions
    tunnel_options: TunnelOptions


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """What a shard is made from. ``handshakes``: its share of the handshake bound;
    ``concurrency``: its share of the group's (None: from its own open-files limit); ``logs``:
    whether the driver wants the shard's log events (else remote output goes to the shard's
    stderr, which is the driver's)."""

    label: str
    hosts: Tuple[HostSpec, ...]
    handshakes: int
    concurrency: Optional[int] = None
    logs: bool = False  # the driver configured structlog: send it the shard's events (``logs.forward``)


@dataclasses.dataclass(frozen=True)
class RunOrder:
    """One fan-out's part for one shard: the job (a ``Put``/``Fetch``'s ``progress`` replaced
    by ``progress=True``), the shard's hosts in the group's order, the deadline as stated and
    the seconds left of it when sent (``jobs.seconds_left``), preloads for a Call's module
    (``{serve: (names, packed MODULES payload)}``) and hosts new to the shard."""

    job: Job
    hosts: Tuple[str, ...]
    deadline: Optional[float] = None
    left: Optional[float] = None
    progress: bool = False
    preloads: Dict[Tuple[str, ...], Dict[str, Preload]] = dataclasses.field(default_factory=dict)
    added: Tuple[HostSpec, ...] = ()


def _repack(packed: bytes, keep_first: bool, sent: Set[str]) -> Optional[bytes]:
    """A MODULES payload without the modules in ``sent`` (the first kept if ``keep_first``),
    and ``sent`` updated; None when nothing is left."""
    entries = msgpack.unpackb(packed)
    fresh = [entry for index, entry in enumerate(entries) if (keep_first and index == 0) or entry[0] not in sent]
    sent.update(entry[0] for entry in fresh)
    return msgpack.packb(fresh) if fresh else None


class ShardModules:
    """The import service of a shard's tunnels (``ModuleServer``'s interface for
    ``connection.py``), answered by the driver's ``ModuleServer`` for ``serve``.

    The driver answers as if the tunnel had been sent nothing yet; each tunnel's ``sent`` set
    then trims the answer here, as the driver would have."""

    def __init__(self, serve: Tuple[str, ...], ask: Ask) -> None:
        self.serve = serve
        self._ask = ask
        # (kind, key) -> its answer, set once it came: the tunnels that ask the same meanwhile
        # wait for that one question to the driver instead of asking again
        self._answers: Dict[Tuple[str, Any], gevent.event.AsyncResult] = {}

    def forget(self) -> None:
        """Drop the cached answers (each fan-out asks again: a file may have changed)."""
        self._answers.clear()

    def know(self, module: str, preload: Preload) -> None:
        """A preload the driver shipped with the job."""
        answer = self._answers[("preload", module)] = gevent.event.AsyncResult()
        answer.set(preload)

    def _cached(self, kind: str, key: Any) -> Any:
        answer = self._answers.get((kind, key))
        if answer is None:
            answer = self._answers[(kind, key)] = gevent.event.AsyncResult()
            try:
                answer.set(self._ask(kind, (self.serve, key)))
            except Exception as exc:  # not kept: the next asker asks again
                self._answers.pop((kind, key), None)
                answer.set_exception(exc)
        return answer.get()

    def preload_message(self, name: str, sent: Set[str]) -> Optional[bytes]:
        try:
            names, packed = self._cached("preload", name)
        except Exception:  # the driver went away: the remote asks for the module when it needs it
            return None
        if packed is None:
            return None
        if sent.isdisjoint(names):
            sent.update(names)
            return packed
        return _repack(packed, False, sent)

    def answer_import(self, payload: bytes, sent: Set[str], host: str) -> Tuple[int, bytes]:
        try:
            kind, reply = self._cached("import", payload)
        except Exception:  # never raises (connection.py's contract): "not found"
            return protocol.MODULES, msgpack.packb([])
        if kind != protocol.MODULES:
            return kind, reply
        return kind, _repack(reply, True, sent) or msgpack.packb([])

    def answer_data(self, payload: bytes) -> bytes:
        try:
            return self._ask("data", (self.serve, payload))  # not cached: up to 64 MiB each
        except Exception as exc:  # never raises (connection.py's contract)
            return msgpack.packb([False, "the driver did not answer: %s" % exc])


class ShardCore:
    """A shard's tunnels (kept open between fan-outs) and the runs of jobs on them."""

    def __init__(self, spec: ShardSpec, ask: Ask) -> None:
        self.spec = spec
        self._ask = ask
        self._slots = HandshakeSlots(spec.handshakes)
        self._modules: Dict[Tuple[str, ...], ShardModules] = {}
        self.tunnels: Dict[str, SSHTunnel] = {}
        self.add(spec.hosts)

    def add(self, hosts: Sequence[HostSpec]) -> None:
        """Hosts new to this shard (a group grown by ``|``); one already here is kept."""
        for host in hosts:
            if host.name in self.tunnels:
                continue
            serve = tuple(host.tunnel_options.serve)
            modules = self._modules.get(serve)
            if modules is None:
                modules = self._modules[serve] = ShardModules(serve, self._ask)
            self.tunnels[host.name] = SSHTunnel(
                host.name, options=host.options, tunnel_options=dataclasses.replace(host.tunnel_options, serve=()),
                modules=modules, handshake_slots=self._slots)

    def events(self, order: RunOrder) -> Iterator[Event]:
        """Run ``order`` on this shard's tunnels; yield its events, ``("done",)`` last.
        Closing the generator stops the run."""
        self.add(order.added)
        for modules in self._modules.values():
            modules.forget()
            for module, preload in order.preloads.get(modules.serve, {}).items():
                modules.know(module, preload)
        tunnels = [self.tunnels[name] for name in order.hosts]
        if order.progress:
            yield from self._with_progress(order, tunnels)
        else:  # the engine's own stream, with no greenlet or queue between: the common case, and the cheap one
            yield from self._results(order.job, order, tunnels)
        yield ("done",)

    def _results(self, job: Job, order: RunOrder, tunnels: List[SSHTunnel]) -> Iterator[Event]:
        stream = fan_out(job, tunnels, self.spec.concurrency or default_concurrency(), order.deadline,
                         deadline_end(order.left) if order.left is not None else None)
        try:
            for host, value in stream:
                yield ("result", host, value)
        except Exception as exc:  # the job's start failed (a Put's file went away): every host's error
            error = ErrorResult.from_exception(exc)
            for tunnel in tunnels:
                yield ("result", tunnel.host, error)
        finally:
            stream.close()

    def _with_progress(self, order: RunOrder, tunnels: List[SSHTunnel]) -> Iterator[Event]:
        """``_results`` for a Put or Fetch whose bytes the driver counts: the run goes on in a
        greenlet, and the bytes moved are reported every ``PROGRESS_INTERVAL`` and before each
        host's result (the driver may stop reading after the last one)."""
        events: gevent.queue.Queue = gevent.queue.Queue()
        moved = [0]

        def progress(nbytes: int) -> None:
            moved[0] += nbytes

        def drive() -> None:
            for event in self._results(dataclasses.replace(order.job, progress=progress),  # type: ignore
                                       order, tunnels):
                events.put(event)
            events.put(None)

        worker = gevent.spawn(drive)
        try:
            while True:
                try:
                    event = events.get(timeout=PROGRESS_INTERVAL)
                except gevent.queue.Empty:
                    event = ()
                if moved[0]:
                    yield ("progress", moved[0])
                    moved[0] = 0
                if event is None:
                    return
                if event:
                    yield event
        finally:
            worker.kill()

    def close(self) -> None:
        """Close every tunnel (they would reconnect on next use)."""
        gevent.joinall([gevent.spawn(tunnel.close) for tunnel in self.tunnels.values()])


class ShardSide:
    """A shard's side of its driver's conversation (see the module's text), in the shard's hub.
    ``send(message)`` carries a message to the driver and never waits; ``ask_timeout`` bounds
    the wait for an answer (None: until ``close``)."""

    def __init__(self, spec: ShardSpec, send: Callable[[Tuple[Any, ...]], None],
                 ask_timeout: Optional[float] = None) -> None:
        self.send = send
        self.ask_timeout = ask_timeout
        self.runs: Dict[int, gevent.Greenlet] = {}
        self.asks: Dict[int, gevent.event.AsyncResult] = {}
        self.ids = itertools.count(1)
        if spec.logs:
            logs.forward(lambda method, fields: send(("log", method, fields)))
        self.core = ShardCore(spec, self.ask)

    def ask(self, kind: str, key: Any) -> Any:
        """The driver's answer to one question of the import service (LookupError: it could
        not answer; the remote that asked is told the module is not found)."""
        ask_id = next(self.ids)
        answer = self.asks[ask_id] = gevent.event.AsyncResult()
        self.send(("ask", ask_id, kind, key))
        try:
            return answer.get(timeout=self.ask_timeout)
        finally:
            self.asks.pop(ask_id, None)

    def answer(self, ask_id: int, ok: bool, value: Any) -> None:
        """The driver's ``answer_for`` a question: ``(True, value)`` or ``(False, why)``."""
        asked = self.asks.get(ask_id)
        if asked is not None:
            asked.set(value) if ok else asked.set_exception(LookupError(value))

    def run(self, run_id: int, order: RunOrder) -> None:
        """Start ``order``; its events are sent as they come."""
        self.runs[run_id] = gevent.spawn(self._run, run_id, order)

    def _run(self, run_id: int, order: RunOrder) -> None:
        try:  # a cancel kills this greenlet inside ``events``, whose own finally stops the run
            for event in self.core.events(order):
                self.send(("event", run_id, event))
        finally:
            if self.runs.get(run_id) is gevent.getcurrent():
                del self.runs[run_id]

    def cancel(self, run_id: int) -> None:
        running = self.runs.pop(run_id, None)
        if running is not None:
            running.kill(block=False)

    def close(self, grace: Optional[float] = None) -> None:
        """Fail the questions still waiting, stop the runs, close the tunnels (within
        ``grace`` seconds)."""
        for answer in list(self.asks.values()):
            answer.set_exception(EOFError("the driver went away"))
        gevent.killall(list(self.runs.values()))
        with gevent.Timeout(grace, False):
            self.core.close()


def answer_for(answer: Callable[[str, Any], Any], kind: str, key: Any) -> Tuple[bool, Any]:
    """The driver's side of a shard's question: ``(True, answer(kind, key))``, or ``(False,
    why)`` when answering raised (the shard's remote then gets "not found", as without shards)."""
    try:
        return True, answer(kind, key)
    except Exception as exc:  # whatever the import service raised, said to the shard
        return False, "%s: %s" % (type(exc).__name__, exc)


def deliver(sink: Any, message: Tuple[Any, ...], ask: Callable[[int, str, Any], None]) -> None:
    """The driver's side of one message a ``ShardSide`` sent: an event or a log event to the
    backend's ``sink``, a question to ``ask(ask_id, kind, key)`` (the backend's way to send
    back ``answer_for`` it)."""
    {"event": sink.event, "log": sink.log, "ask": ask}[message[0]](*message[1:])


def preloads_for(job: Job, servers: Dict[Tuple[str, ...], Any]) -> Dict[Tuple[str, ...], Dict[str, Preload]]:
    """What the modules of a Call (or of a queue's Calls) preload, per ``serve`` list, from
    the driver's import services (``{serve: ModuleServer}``): shipped with the job so no shard
    asks for them."""
    if isinstance(job, Calls):
        calls = [call for fifo in job.fifos.values() for call in fifo if isinstance(call, Call)]
    elif isinstance(job, Call):
        calls = [job]
    else:
        return {}
    modules = {call.module for call in calls if call.module is not None}
    return {serve: {module: preload_of(server, module) for module in modules} for serve, server in servers.items()}


def preload_of(server: Any, module: str) -> Preload:
    """A ``ModuleServer``'s preload for ``module``, for a tunnel that has been sent nothing."""
    sent: Set[str] = set()
    packed = server.preload_message(module, sent)
    return frozenset(sent), packed
