"""Jobs: a fan-out's work as values, and the one engine that maps a job over tunnels. API layer.

A job is plain data, not a closure over live tunnels: a ``Call`` holds its function and
arguments already pickled (once per fan-out, not once per host), a ``Put`` its local source
and remote path template, a ``Fetch`` its remote path and local path template, a ``Connect``
nothing at all. Each has three steps: ``start(hosts)`` opens once what every host shares (a
Put's source files), ``run(tunnel)`` does one host's part, ``close()`` releases what start
opened. A job that has not started pickles (a Put from a path, with no ``progress`` or a
module-level one), so another process can run it.

``fan_out(job, tunnels, concurrency, deadline)`` is the one bounded fan-out engine:
``Group`` and ``Queue`` run their work through it, and a process driving a share of a
fleet can run the same engine on a job it was sent and stream the ``(host, result)`` pairs
back (results pickle, ``ErrorResult`` included).
"""

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import gevent
import gevent.pool
import gevent.queue

from chopsticks import transfer
from chopsticks.errors import CallTimeout, ChopsticksError, SerializationError
from chopsticks.pickling import dumps_call
from chopsticks.results import ErrorResult
from chopsticks.sources import Source, Sources
from chopsticks.wire import protocol

if TYPE_CHECKING:
    from chopsticks.tunnel import BaseTunnel

Progress = Optional[Callable[[int], None]]


class Job:
    """One fan-out's work: ``start(hosts)`` once, ``run(tunnel)`` per host, ``close()`` once."""

    def start(self, hosts: Sequence[str]) -> None:
        """Open what the hosts share (``hosts``: their names, in the fan-out's order)."""

    def run(self, tunnel: "BaseTunnel") -> Any:
        """One host's part; its value is that host's result, an exception its ErrorResult."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``start`` opened."""


@dataclasses.dataclass(frozen=True)
class Call(Job):
    """``fn(*args, **kwargs)`` on each host, pickled once: ``Call.of(fn, args, kwargs)``.

    ``module`` names the function's module (its source goes along with the first call on a
    tunnel), ``timeout`` bounds each host's call as ``BaseTunnel.call``'s does, and
    ``refusal`` says why the call cannot be sent, when it cannot: each host then fails with
    that SerializationError, as it would have alone."""

    payload: bytes = dataclasses.field(repr=False)
    module: Optional[str] = None
    timeout: Optional[float] = None
    refusal: Optional[str] = None

    @classmethod
    def of(cls, fn: Any, args: Tuple[Any, ...] = (), kwargs: Optional[Dict[str, Any]] = None, *,
           timeout: Optional[float] = None, host: Optional[str] = None) -> "Call":
        """The call pickled; SerializationError if it cannot be, or if it is over one message's
        limit (``host``, if given, names the tunnel in that message)."""
        payload = dumps_call(fn, args, kwargs or {})
        if len(payload) > protocol.MAX_MESSAGE:
            raise SerializationError("%sthe call's arguments pickle to %d bytes, over the %d-byte limit of one "
                                     "message; send bulk data with put" % ("" if host is None else "[%s] " % host,
                                                                          len(payload), protocol.MAX_MESSAGE))
        module = getattr(fn, "__module__", None)
        return cls(payload, module if isinstance(module, str) else None, timeout)

    @classmethod
    def for_hosts(cls, fn: Any, args: Tuple[Any, ...] = (), kwargs: Optional[Dict[str, Any]] = None, *,
                  timeout: Optional[float] = None) -> "Call":
        """``of``, for a fan-out: a call that cannot be sent is a failure of each host, not an
        exception here."""
        try:
            return cls.of(fn, args, kwargs, timeout=timeout)
        except SerializationError as exc:
            return cls(b"", None, timeout, str(exc))

    def run(self, tunnel: "BaseTunnel") -> Any:
        if self.refusal is not None:
            raise SerializationError(self.refusal)
        return tunnel.run_call(self)


@dataclasses.dataclass
class Put(Job):
    """``BaseTunnel.put`` on each host: ``{host}`` in ``remote_path`` becomes the host's name.

    ``local_path`` is a path (a file or a directory tree) or a file object (spooled once by
    ``start``; such a Put does not pickle). ``progress(nbytes)`` counts bytes sent to any host."""

    local_path: Any
    remote_path: Optional[str] = None
    mode: Optional[int] = None
    make_dirs: bool = False
    timeout: Optional[float] = None
    progress: Progress = None
    _opened: Any = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        transfer.check_mode(self.mode)  # refused before any host is contacted, as the CLI does

    def __getstate__(self) -> Dict[str, Any]:
        return dict(self.__dict__, _opened=None)  # open files belong to the process that opened them

    def start(self, hosts: Sequence[str]) -> None:
        shared = len(hosts) > 1
        if isinstance(self.local_path, (str, os.PathLike)):
            os.stat(self.local_path)  # a missing or unreadable file is one error, not one per host
            sources = Sources(shared=shared)
            self._opened = sources
            if not os.path.isdir(self.local_path):
                sources.acquire(os.fspath(self.local_path)).release()  # opened (and checked) now
        else:
            source = Source(self.local_path)  # spooled once
            source.shared = shared
            self._opened = source

    def _target(self, tunnel: "BaseTunnel") -> Optional[str]:
        return None if self.remote_path is None else self.remote_path.replace("{host}", tunnel.host)

    def run(self, tunnel: "BaseTunnel") -> Any:
        opened = self._opened
        if isinstance(opened, Source):
            return transfer._with_timeout(tunnel, self.timeout, lambda: transfer.send_source(
                tunnel, opened, self._target(tunnel), self.mode, self.make_dirs, self.progress))
        return transfer.put(tunnel, self.local_path, self._target(tunnel), self.mode, make_dirs=self.make_dirs,
                            timeout=self.timeout, progress=self.progress, sources=opened)

    def close(self) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.close()


@dataclasses.dataclass
class Fetch(Job):
    """``BaseTunnel.fetch`` on each host, to ``local_path.format(host=...)`` (None: a temporary
    file each). A template that gives two hosts the same path is refused by ``start``."""

    remote_path: str
    local_path: Any = None
    make_dirs: bool = False
    timeout: Optional[float] = None
    progress: Progress = None
    _paths: Dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def start(self, hosts: Sequence[str]) -> None:
        self._paths = dict(transfer.host_paths(list(hosts), self.local_path))

    def run(self, tunnel: "BaseTunnel") -> Any:
        return transfer.fetch(tunnel, self.remote_path, self._paths[tunnel.host], make_dirs=self.make_dirs,
                              timeout=self.timeout, progress=self.progress)


@dataclasses.dataclass(frozen=True)
class Connect(Job):
    """Start each host's agent now; each host's result is None."""

    def run(self, tunnel: "BaseTunnel") -> None:
        tunnel.connect()


# -- the engine -------------------------------------------------------------------------------

def fan_out(job: Job, tunnels: Sequence["BaseTunnel"], concurrency: int,
            deadline: Optional[float] = None) -> Iterator[Tuple[str, Any]]:
    """Run ``job`` on every tunnel, ``concurrency`` at a time; yield ``(host, value or
    ErrorResult)`` as each finishes, every host once.

    ``deadline`` (seconds) bounds the whole fan-out, the tunnels' starts included (no start
    begins after it, and one under way is stopped at it): hosts not finished then yield an
    ErrorResult wrapping CallTimeout. The job is started on the first ``next()`` and closed
    when the stream ends or is closed; closing it early stops the hosts still running."""
    job.start([t.host for t in tunnels])
    try:
        yield from _stream(job, tunnels, concurrency, deadline)
    finally:
        job.close()


def _stream(job: Job, tunnels: Sequence["BaseTunnel"], concurrency: int,
            deadline: Optional[float]) -> Iterator[Tuple[str, Any]]:
    results: gevent.queue.Queue = gevent.queue.Queue()
    pool = gevent.pool.Pool(concurrency)
    ends_at = None if deadline is None else time.monotonic() + deadline

    def past_deadline(host: str) -> ErrorResult:
        return ErrorResult.from_exception(CallTimeout("[%s] the fan-out deadline of %ss passed first"
                                                      % (host, deadline)))

    def run(tunnel: "BaseTunnel") -> None:
        try:
            if ends_at is not None:  # the start gets what is left; nothing starts after it
                tunnel.connect(timeout=ends_at - time.monotonic())
            value = job.run(tunnel)
        except ChopsticksError as exc:
            late = ends_at is not None and isinstance(exc, TimeoutError) and time.monotonic() >= ends_at
            value = past_deadline(tunnel.host) if late else ErrorResult.from_exception(exc)
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # a bug of ours or the transport's: still a per-host result
            value = ErrorResult("%s: %s" % (type(exc).__name__, exc), None, exc)
        results.put((tunnel.host, value))

    feeder = gevent.spawn(lambda: [pool.spawn(run, t) for t in tunnels])
    pending = {t.host for t in tunnels}
    try:
        while pending:
            wait = None if ends_at is None else max(0.0, ends_at - time.monotonic())
            try:
                host, value = results.get(timeout=wait)
            except gevent.queue.Empty:
                break
            pending.discard(host)
            yield host, value
    finally:
        feeder.kill()
        pool.kill()
    for host in [t.host for t in tunnels if t.host in pending]:
        yield host, past_deadline(host)
