"""Jobs: a fan-out's work as values, and the one engine that maps a job over tunnels. API layer.

A job is plain data, immutable, not a closure over live tunnels: a ``Call`` holds its function
and arguments already pickled (once per fan-out, not once per host), a ``Put`` its local
source and remote path template, a ``Fetch`` its remote path and each host's local path (made
for all the hosts at once, so that two never share one), a ``Connect`` nothing at all.
``job.start(hosts)`` opens once what every host shares (a Put's source files) and returns the
job's ``Run``: ``run(tunnel)`` does one host's part, ``close()`` releases what start opened.
A job that opens nothing is its own run. What was opened lives in the run, never in the job,
so a job pickles at any time (a Put from a path, with no ``progress`` or a module-level one)
and another process can run it.

``fan_out(job, tunnels, concurrency, deadline)`` is the one bounded fan-out engine:
``Group`` and ``Queue`` run their work through it, and a process driving a share of a
fleet can run the same engine on a job it was sent and stream the ``(host, result)`` pairs
back (results pickle, ``ErrorResult`` included). A host whose part starts without waiting
(``Run.begin``: a call on a connected tunnel) costs it no greenlet, only a future it
collects; any other host's part runs in a greenlet of its own. A deadline is seconds; the engine turns it
once into an instant of this machine's ``time.monotonic()`` clock (``ends_at``). Such an
instant means nothing on another machine: what crosses is ``seconds_left(ends_at)`` at send,
and the other side runs ``fan_out(..., deadline=stated, ends_at=deadline_end(left))``.
"""

import dataclasses
import os
import resource
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, Iterator, Optional, Sequence, Tuple, Union

import gevent
import gevent.lock
import gevent.pool
import gevent.queue

from chopsticks import bulk, transfer
from chopsticks.errors import CallTimeout, ChopsticksError, SerializationError
from chopsticks.future import CallFuture
from chopsticks.pickling import dumps_call, named_call
from chopsticks.results import ErrorResult
from chopsticks.sources import Source, Sources
from chopsticks.transports.ssh import raise_open_files_limit
from chopsticks.wire import protocol

if TYPE_CHECKING:
    from chopsticks.tunnel import BaseTunnel

Progress = Optional[Callable[[int], None]]


class Run:
    """A job started for one fan-out's hosts: ``run(tunnel)`` for each host, then ``close()``."""

    def run(self, tunnel: "BaseTunnel") -> Any:
        """One host's part; its value is that host's result, an exception its ErrorResult."""
        raise NotImplementedError

    def begin(self, tunnel: "BaseTunnel") -> Optional[CallFuture]:
        """One host's part started without waiting, when it can be: its future, resolved (in
        the hub) with the value ``run`` would return. None (the default): the engine gives the
        host a greenlet of its own to ``run`` in."""
        return None

    def close(self) -> None:
        """Release what the job's start opened (nothing, by default)."""


class Job:
    """One fan-out's work, as a value: ``start(hosts)`` once gives the ``Run`` for its hosts."""

    def start(self, hosts: Sequence[str]) -> Run:
        """Open what the hosts share (``hosts``: their names, in the fan-out's order)."""
        raise NotImplementedError


class Stateless(Job, Run):
    """A job that opens nothing for its hosts: it is its own run."""

    def start(self, hosts: Sequence[str]) -> Run:
        return self


@dataclasses.dataclass(frozen=True)
class Call(Stateless):
    """``fn(*args, **kwargs)`` on each host, pickled once: ``Call.of(fn, args, kwargs)``.

    ``module`` names the function's module (its source goes along with the first call on a
    tunnel), ``timeout`` bounds each host's call as ``BaseTunnel.call``'s does, and
    ``refusal`` says why the call cannot be sent, when it cannot: each host then fails with
    that SerializationError, as it would have alone (``check``). ``kind`` is the message
    that carries ``payload``: ``CALL_NAMED`` for a call that goes by name with plain
    arguments (``pickling.named_call``), else ``CALL`` and a pickle."""

    payload: bytes = dataclasses.field(repr=False)
    module: Optional[str] = None
    timeout: Optional[float] = None
    refusal: Optional[str] = None
    kind: int = protocol.CALL

    @classmethod
    def of(cls, fn: Any, args: Tuple[Any, ...] = (), kwargs: Optional[Dict[str, Any]] = None, *,
           timeout: Optional[float] = None) -> "Call":
        """The call pickled; SerializationError if it cannot be. (One too large for a message
        is refused by ``check``, which names the host.)"""
        named = named_call(fn, args, kwargs or {})
        payload = dumps_call(fn, args, kwargs or {}) if named is None else named
        module = getattr(fn, "__module__", None)
        return cls(payload, module if isinstance(module, str) else None, timeout,
                   kind=protocol.CALL if named is None else protocol.CALL_NAMED)

    @classmethod
    def for_hosts(cls, fn: Any, args: Tuple[Any, ...] = (), kwargs: Optional[Dict[str, Any]] = None, *,
                  timeout: Optional[float] = None) -> "Call":
        """``of``, for a fan-out: a call that cannot be sent is a failure of each host, not an
        exception here."""
        try:
            return cls.of(fn, args, kwargs, timeout=timeout)
        except SerializationError as exc:
            return cls(b"", None, timeout, str(exc))

    def check(self, host: str) -> None:
        """SerializationError, in the words a tunnel named ``host`` uses, if this call cannot be
        sent: its refusal, or a payload over one message's limit. ``BaseTunnel.submit`` checks."""
        if self.refusal is not None:
            raise SerializationError(self.refusal)
        if len(self.payload) > protocol.MAX_MESSAGE:
            raise SerializationError("[%s] the call's arguments pickle to %d bytes, over the %d-byte limit of one "
                                     "message; send bulk data with put" % (host, len(self.payload),
                                                                          protocol.MAX_MESSAGE))

    def run(self, tunnel: "BaseTunnel") -> Any:
        return tunnel.run_call(self)

    def begin(self, tunnel: "BaseTunnel") -> Optional[CallFuture]:
        """Sent at once on a connected tunnel (a write that cannot finish goes on in a
        greenlet; a ``timeout`` is a timer in the hub); one that must connect first runs in
        a greenlet."""
        return tunnel.submit(self) if tunnel.connected else None


@dataclasses.dataclass(frozen=True)
class Calls(Stateless):
    """Each host's own FIFO of jobs (calls, puts, fetches, connects), run in order: a
    ``Queue``'s work as data, for hosts in shards. Each job is started for its host alone. A
    host's result is the list of its jobs' values (a failed one's value is an ErrorResult, and
    the host goes on with its next)."""

    fifos: Dict[str, Tuple[Job, ...]]

    def run(self, tunnel: "BaseTunnel") -> Any:
        return [run_one(job, tunnel) for job in self.fifos[tunnel.host]]


def run_one(job: Job, tunnel: "BaseTunnel") -> Any:
    """``job`` on one tunnel, started for it alone: its value, or an ErrorResult."""
    try:
        started = job.start([tunnel.host])
        try:
            return started.run(tunnel)
        finally:
            started.close()
    except ChopsticksError as exc:
        return ErrorResult.from_exception(exc)
    except Exception as exc:  # a local file that cannot be read or written, as a Group gives it
        return ErrorResult.from_exception(exc)


@dataclasses.dataclass(frozen=True)
class Put(Job):
    """``BaseTunnel.put`` on each host: ``{host}`` in ``remote_path`` becomes the host's name.

    ``local_path`` is a path (a file or a directory tree) or a file object (spooled once by
    ``start``; such a Put does not pickle). ``progress(nbytes)`` counts bytes sent to any host.
    ``if_changed`` sends nothing to a host whose file already has the same size and SHA-256.
    ``sessions``: extra SSH sessions per host for a big file (``BaseTunnel.put``). A bad
    ``mode`` or ``sessions`` is refused here, before any host is contacted."""

    local_path: Any
    remote_path: Optional[str] = None
    mode: Optional[int] = None
    make_dirs: bool = False
    timeout: Optional[float] = None
    progress: Progress = None
    if_changed: bool = False
    sessions: Optional[int] = None

    def __post_init__(self) -> None:
        transfer.check_mode(self.mode)  # refused before any host is contacted, as the CLI does
        bulk.check_sessions(self.sessions)

    def start(self, hosts: Sequence[str]) -> Run:
        shared = len(hosts) > 1
        if not isinstance(self.local_path, (str, os.PathLike)):
            source = Source(self.local_path)  # spooled once
            source.shared = shared
            return _PutRun(self, source)
        os.stat(self.local_path)  # a missing or unreadable file is one error, not one per host
        sources = Sources(shared=shared)
        try:
            if not os.path.isdir(self.local_path):
                sources.acquire(os.fspath(self.local_path)).release()  # opened (and checked) now
        except BaseException:
            sources.close()
            raise
        return _PutRun(self, sources)


class _PutRun(Run):
    """A Put started: its source, opened (or spooled) once for every host."""

    def __init__(self, put: Put, opened: Union[Source, Sources]):
        self.put = put
        self.opened = opened

    def run(self, tunnel: "BaseTunnel") -> Any:
        put, opened = self.put, self.opened
        target = None if put.remote_path is None else put.remote_path.replace("{host}", tunnel.host)
        if isinstance(opened, Source):
            return transfer.put_source(tunnel, opened, target, put.mode, put.make_dirs, put.timeout, put.progress,
                                       put.if_changed, put.sessions)
        return transfer.put(tunnel, put.local_path, target, put.mode, make_dirs=put.make_dirs, timeout=put.timeout,
                            progress=put.progress, if_changed=put.if_changed, sessions=put.sessions, sources=opened)

    def close(self) -> None:
        self.opened.close()


@dataclasses.dataclass(frozen=True)
class Fetch(Stateless):
    """``BaseTunnel.fetch`` on each host, to its path in ``local_paths`` (None: a temporary
    file). ``Fetch.for_hosts`` makes it from a ``{host}`` template. ``sessions``: extra SSH
    sessions per host for a big file (``BaseTunnel.fetch``), refused here if bad."""

    remote_path: str
    local_paths: Dict[str, Any]
    make_dirs: bool = False
    timeout: Optional[float] = None
    progress: Progress = None
    sessions: Optional[int] = None

    def __post_init__(self) -> None:
        bulk.check_sessions(self.sessions, "fetch")

    @classmethod
    def for_hosts(cls, remote_path: str, local_path: Any, hosts: Sequence[str], *, make_dirs: bool = False,
                  timeout: Optional[float] = None, progress: Progress = None,
                  sessions: Optional[int] = None) -> "Fetch":
        """To ``local_path.format(host=...)`` for each of ``hosts`` (None: a temporary file
        each); ValueError here, before any host is contacted, if two hosts would get the same
        path (so all the hosts are given, before any split of them)."""
        bulk.check_sessions(sessions, "fetch")  # before the template, as put checks before its file
        return cls(remote_path, dict(transfer.host_paths(list(hosts), local_path)), make_dirs, timeout, progress,
                   sessions)

    def run(self, tunnel: "BaseTunnel") -> Any:
        return transfer.fetch(tunnel, self.remote_path, self.local_paths[tunnel.host], make_dirs=self.make_dirs,
                              timeout=self.timeout, progress=self.progress, sessions=self.sessions)


@dataclasses.dataclass(frozen=True)
class Connect(Stateless):
    """Start each host's agent now; each host's result is None."""

    def run(self, tunnel: "BaseTunnel") -> None:
        tunnel.connection()


# -- the engine -------------------------------------------------------------------------------

def default_concurrency() -> int:
    """From the open-files limit (raised first): each tunnel holds a socket or three pipes."""
    raise_open_files_limit()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, min(10000, (soft - 64) // 4))



def deadline_end(deadline: Optional[float]) -> Optional[float]:
    """The ``time.monotonic()`` instant ``deadline`` seconds from now (None: no deadline)."""
    return None if deadline is None else time.monotonic() + deadline


def seconds_left(ends_at: Optional[float]) -> Optional[float]:
    """Seconds until ``ends_at`` (an instant of this machine's ``time.monotonic()``), never
    below 0; None for no end. The form in which a deadline crosses to another process or
    machine: monotonic clocks are per machine, so the instant itself means nothing there."""
    return None if ends_at is None else max(0.0, ends_at - time.monotonic())


def fan_out(job: Job, tunnels: Sequence["BaseTunnel"], concurrency: int, deadline: Optional[float] = None,
            ends_at: Optional[float] = None) -> Generator[Tuple[str, Any], None, None]:
    """Run ``job`` on every tunnel, ``concurrency`` at a time; yield ``(host, value or
    ErrorResult)`` as each finishes, every host once.

    ``deadline`` (seconds) bounds the whole fan-out, the tunnels' starts included (no start
    begins after it, and one under way is stopped at it): hosts not finished then yield an
    ErrorResult wrapping CallTimeout. It counts from the first ``next()``, unless ``ends_at``
    (a ``time.monotonic()`` instant: see ``seconds_left``) says when it ends; ``deadline``
    is then only what the messages state. The job is started on the first ``next()`` and its
    run closed when the stream ends or is closed; closing it early stops the hosts still
    running."""
    run = job.start([t.host for t in tunnels])
    try:
        yield from _stream(run, tunnels, concurrency, deadline, deadline_end(deadline) if ends_at is None else ends_at)
    finally:
        run.close()


def _stream(started: Run, tunnels: Sequence["BaseTunnel"], concurrency: int, deadline: Optional[float],
            ends_at: Optional[float]) -> Iterator[Tuple[str, Any]]:
    results: gevent.queue.Queue = gevent.queue.Queue()
    slots = gevent.lock.Semaphore(concurrency)  # hosts under way, begun or in a greenlet
    greenlets = gevent.pool.Group()
    begun: Dict[str, CallFuture] = {}
    stated = "" if deadline is None else " of %ss" % deadline

    def past_deadline(host: str) -> ErrorResult:
        return ErrorResult.from_exception(CallTimeout("[%s] the fan-out deadline%s passed first" % (host, stated)))

    def failed(host: str, exc: BaseException) -> ErrorResult:
        if isinstance(exc, ChopsticksError):
            late = ends_at is not None and isinstance(exc, TimeoutError) and seconds_left(ends_at) == 0
            return past_deadline(host) if late else ErrorResult.from_exception(exc)
        # a bug of ours or the transport's: still a per-host result
        return ErrorResult("%s: %s" % (type(exc).__name__, exc), None, exc)

    def finished(host: str, value: Any) -> None:
        slots.release()
        results.put((host, value))

    def run(tunnel: "BaseTunnel") -> None:
        try:
            if ends_at is not None:  # the start gets what is left; nothing starts after it
                tunnel.connection(seconds_left(ends_at))
            value = started.run(tunnel)
        except gevent.GreenletExit:
            raise
        except Exception as exc:
            value = failed(tunnel.host, exc)
        finished(tunnel.host, value)

    def landed(future: CallFuture) -> None:  # in the hub
        begun.pop(future.host, None)  # only calls still under way are kept, to stop at the end
        error = future.exception()
        finished(future.host, future.value if error is None else failed(future.host, error))

    def feed() -> None:
        for tunnel in tunnels:
            slots.acquire()
            try:
                future = started.begin(tunnel)
            except Exception as exc:
                finished(tunnel.host, failed(tunnel.host, exc))
                continue
            if future is None:
                greenlets.spawn(run, tunnel)
            else:
                begun[tunnel.host] = future
                future.add_done_callback(landed)

    feeder = gevent.spawn(feed)
    pending = {t.host for t in tunnels}
    try:
        while pending:
            try:
                host, value = results.get(timeout=seconds_left(ends_at))
            except gevent.queue.Empty:
                break
            pending.discard(host)
            yield host, value
    finally:
        feeder.kill()
        greenlets.kill()
        for host in pending:
            if host in begun:
                begun[host].stop_sending()
    for host in [t.host for t in tunnels if t.host in pending]:
        yield host, past_deadline(host)
