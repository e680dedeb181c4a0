"""Group: one call fanned out over many tunnels, through a bounded pool. API layer.

Strings become ``SSHTunnel``s sharing one ``SSHOptions``, one import service and one bound
on handshakes. Every host gets a result (a value or an ``ErrorResult``) in the group's
order; one host failing, hanging or refusing the login costs the others nothing beyond its
own ``timeout``, and ``deadline`` bounds the whole fan-out. Results also stream, as they
arrive, through ``iter_call`` or a ``callback``.
"""

import os
import resource
import time
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import gevent
import gevent.pool
import gevent.queue

from chopsticks.errors import CallTimeout, ChopsticksError
from chopsticks.options import TunnelOptions, replace
from chopsticks.results import ErrorResult, GroupResult
from chopsticks.transports.ssh import raise_open_files_limit
from chopsticks.transports.ssh_options import SSHOptions
from chopsticks.tunnel import BaseTunnel, SSHTunnel

Host = Union[str, BaseTunnel]


def default_concurrency() -> int:
    """From the open-files limit (raised first): each tunnel holds a socket or three pipes."""
    raise_open_files_limit()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, min(10000, (soft - 64) // 4))


class Group:
    """Tunnels addressed together. ``Group(['web-1', 'web-2', Local('w')], user='deploy')``.

    Host names become ``SSHTunnel``s made with the SSH options given (one by one or as
    ``options=``) and the tunnel options (the fields of ``TunnelOptions``: ``python``,
    ``sudo``, ``connect_timeout``, ``max_result``, ``serve``); tunnels passed in are used as
    they are.
    """

    def __init__(self, hosts: Iterable[Host], *, concurrency: Optional[int] = None,
                 options: Optional[SSHOptions] = None, **ssh_options):
        tunnel_options = TunnelOptions.take(ssh_options)
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1, got %r" % (concurrency,))
        self.concurrency = concurrency
        self.options = options = replace(options or SSHOptions(), "Group", ssh_options)
        self.tunnels: List[BaseTunnel] = []
        names = set()
        if isinstance(hosts, (str, BaseTunnel)):
            raise TypeError("Group takes a list of hosts or tunnels, not a single %s" % type(hosts).__name__)
        for host in hosts:
            if isinstance(host, str):
                # the process-wide import service and handshake bound are SSHTunnel's defaults
                tunnel: BaseTunnel = SSHTunnel(host, options=options, **tunnel_options)
            elif isinstance(host, BaseTunnel):
                tunnel = host
            else:
                raise TypeError("a Group takes host names and tunnels, not %r" % (host,))
            if tunnel.host in names:
                raise ValueError("two tunnels are named %r: results are keyed by name" % tunnel.host)
            names.add(tunnel.host)
            self.tunnels.append(tunnel)

    # -- a set of tunnels, by name ----------------------------------------------------------

    @classmethod
    def _of(cls, tunnels: List[BaseTunnel], concurrency: Optional[int]) -> "Group":
        group = cls([], concurrency=concurrency)
        group.tunnels = tunnels
        return group

    def _names(self, other: Union["Group", BaseTunnel]) -> set:
        tunnels = other.tunnels if isinstance(other, Group) else [other]
        return {t.host for t in tunnels}

    def __or__(self, other: Union["Group", BaseTunnel]) -> "Group":
        mine = self._names(self)
        extra = other.tunnels if isinstance(other, Group) else [other]
        return self._of(self.tunnels + [t for t in extra if t.host not in mine], self.concurrency)

    __add__ = __or__  # the original chopsticks' spelling

    def __and__(self, other: Union["Group", BaseTunnel]) -> "Group":
        theirs = self._names(other)
        return self._of([t for t in self.tunnels if t.host in theirs], self.concurrency)

    def __sub__(self, other: Union["Group", BaseTunnel]) -> "Group":
        theirs = self._names(other)
        return self._of([t for t in self.tunnels if t.host not in theirs], self.concurrency)

    def __xor__(self, other: Union["Group", BaseTunnel]) -> "Group":
        return (self - other) | (Group._of(other.tunnels if isinstance(other, Group) else [other],
                                           self.concurrency) - self)

    def select(self, predicate: Callable[[BaseTunnel], bool]) -> "Group":
        """The tunnels for which ``predicate(tunnel)`` is true (decided here), as a new Group."""
        return self._of([t for t in self.tunnels if predicate(t)], self.concurrency)

    def filter(self, predicate: Callable[[], Any], exclude: bool = False, **call_options) -> "Group":
        """The hosts where ``predicate()``, run on each host, returns true (false with
        ``exclude``), as a new Group: the original chopsticks' ``filter``. Raises GroupError
        if any host fails to connect or to run it. ``call_options``: ``timeout``, ``deadline``."""
        result = self.call(predicate, **call_options).raise_failures()
        keep = {host for host, value in result.items() if bool(value) != exclude}
        return self._of([t for t in self.tunnels if t.host in keep], self.concurrency)

    def __iter__(self) -> Iterator[BaseTunnel]:
        return iter(self.tunnels)

    def __len__(self) -> int:
        return len(self.tunnels)

    def __contains__(self, item: object) -> bool:
        name = item.host if isinstance(item, BaseTunnel) else item
        return any(t.host == name for t in self.tunnels)

    def __repr__(self) -> str:
        shown = ", ".join(t.host for t in self.tunnels[:5])
        more = ", ... %d more" % (len(self.tunnels) - 5) if len(self.tunnels) > 5 else ""
        return "Group([%s%s])" % (shown, more)

    # -- fan-out ------------------------------------------------------------------------------

    def iter_call(self, fn, /, *args, timeout: Optional[float] = None, deadline: Optional[float] = None,
                  **kwargs) -> Iterator[Tuple[str, Any]]:
        """Run ``fn`` on every host; yield ``(host, value or ErrorResult)`` as each finishes.

        ``timeout`` bounds each host's call (its connect has the tunnel's own timeout);
        ``deadline`` (seconds) bounds the whole fan-out, the tunnels' starts included (no
        start begins after it, and one under way is stopped at it): hosts not finished then
        yield an ErrorResult wrapping CallTimeout.
        """
        return self._fan_out(lambda t: t.call(fn, *args, timeout=timeout, **kwargs), deadline)

    def call(self, fn, /, *args, timeout: Optional[float] = None, deadline: Optional[float] = None,
             callback: Optional[Callable[[str, Any], None]] = None, **kwargs) -> GroupResult:
        """Run ``fn(*args, **kwargs)`` on every host; a GroupResult in the group's order.

        ``callback(host, result)`` is called as each host finishes. See ``iter_call`` for
        ``timeout`` and ``deadline``."""
        return self._gather(self.iter_call(fn, *args, timeout=timeout, deadline=deadline, **kwargs), callback)

    def _gather(self, results: Iterator[Tuple[str, Any]], callback: Optional[Callable[[str, Any], None]]
                ) -> GroupResult:
        arrived = {}
        for host, result in results:
            arrived[host] = result
            if callback is not None:
                callback(host, result)
        return GroupResult((t.host, arrived[t.host]) for t in self.tunnels)

    # -- files --------------------------------------------------------------------------------

    def put(self, local_path, remote_path: Optional[str] = None, mode: Optional[int] = None, *,
            make_dirs: bool = False, timeout: Optional[float] = None, deadline: Optional[float] = None,
            callback: Optional[Callable[[str, Any], None]] = None,
            progress: Optional[Callable[[int], None]] = None) -> GroupResult:
        """Copy a file (a path or a file object) or a directory tree to every host.

        ``{host}`` in ``remote_path`` becomes each host's name (``'/srv/conf/{host}.ini'``).
        The file is read once for all hosts, and a slow host delays only itself. Each host's
        result is ``BaseTunnel.put``'s dict or an ErrorResult; ``timeout`` bounds each host's
        transfer, ``deadline`` the whole; ``progress(nbytes)`` counts bytes sent to any host.
        A local file that cannot be read raises at once, before any host is contacted."""
        return self._gather(self.iter_put(local_path, remote_path, mode, make_dirs=make_dirs, timeout=timeout,
                                          deadline=deadline, progress=progress), callback)

    def iter_put(self, local_path, remote_path: Optional[str] = None, mode: Optional[int] = None, *,
                 make_dirs: bool = False, timeout: Optional[float] = None, deadline: Optional[float] = None,
                 progress: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[str, Any]]:
        """``put``, yielding ``(host, result)`` as each host finishes."""
        from chopsticks import transfer
        from chopsticks.sources import Source, Sources
        transfer.check_mode(mode)  # refused before any host is contacted, as the CLI does

        def for_host(tunnel: BaseTunnel) -> Optional[str]:
            return None if remote_path is None else remote_path.replace("{host}", tunnel.host)

        if isinstance(local_path, (str, os.PathLike)):
            os.stat(local_path)  # a missing or unreadable file is one error, not one per host
            sources = Sources(shared=len(self.tunnels) > 1)
            if not os.path.isdir(local_path):
                sources.acquire(os.fspath(local_path)).release()  # opened (and checked) now

            def work(tunnel: BaseTunnel) -> Any:
                return transfer.put(tunnel, local_path, for_host(tunnel), mode, make_dirs=make_dirs,
                                    timeout=timeout, progress=progress, sources=sources)
            close = sources.close
        else:
            source = Source(local_path)  # spooled once
            source.shared = len(self.tunnels) > 1

            def work(tunnel: BaseTunnel) -> Any:
                return transfer._with_timeout(tunnel, timeout, lambda: transfer.send_source(
                    tunnel, source, for_host(tunnel), mode, make_dirs, progress))
            close = source.close
        try:
            yield from self._fan_out(work, deadline)
        finally:
            close()

    def fetch(self, remote_path: str, local_path=None, *, make_dirs: bool = False, timeout: Optional[float] = None,
              deadline: Optional[float] = None, callback: Optional[Callable[[str, Any], None]] = None,
              progress: Optional[Callable[[int], None]] = None) -> GroupResult:
        """Copy a remote file (or tree) from every host to ``local_path.format(host=...)``
        (None: a temporary file each). A template that gives two hosts the same path is
        refused (ValueError) before anything is fetched."""
        return self._gather(self.iter_fetch(remote_path, local_path, make_dirs=make_dirs, timeout=timeout,
                                            deadline=deadline, progress=progress), callback)

    def iter_fetch(self, remote_path: str, local_path=None, *, make_dirs: bool = False,
                   timeout: Optional[float] = None, deadline: Optional[float] = None,
                   progress: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[str, Any]]:
        """``fetch``, yielding ``(host, result)`` as each host finishes."""
        from chopsticks import transfer
        paths = dict(transfer.host_paths([t.host for t in self.tunnels], local_path))

        def work(tunnel: BaseTunnel) -> Any:
            return transfer.fetch(tunnel, remote_path, paths[tunnel.host], make_dirs=make_dirs, timeout=timeout,
                                  progress=progress)
        return self._fan_out(work, deadline)

    def connect(self, deadline: Optional[float] = None) -> GroupResult:
        """Connect every tunnel now; None for each that connected, else an ErrorResult."""
        arrived = dict(self._fan_out(lambda t: (t.connect(), None)[1], deadline))
        return GroupResult((t.host, arrived[t.host]) for t in self.tunnels)

    def _fan_out(self, work: Callable[[BaseTunnel], Any], deadline: Optional[float]):
        results: gevent.queue.Queue = gevent.queue.Queue()
        pool = gevent.pool.Pool(self.concurrency or default_concurrency())
        ends_at = None if deadline is None else time.monotonic() + deadline

        def past_deadline(host: str) -> ErrorResult:
            return ErrorResult.from_exception(CallTimeout("[%s] the fan-out deadline of %ss passed first"
                                                          % (host, deadline)))

        def run(tunnel: BaseTunnel) -> None:
            try:
                if ends_at is not None:  # the start gets what is left; nothing starts after it
                    tunnel.connect(timeout=ends_at - time.monotonic())
                value = work(tunnel)
            except ChopsticksError as exc:
                late = ends_at is not None and isinstance(exc, TimeoutError) and time.monotonic() >= ends_at
                value = past_deadline(tunnel.host) if late else ErrorResult.from_exception(exc)
            except gevent.GreenletExit:
                raise
            except Exception as exc:  # a bug of ours or the transport's: still a per-host result
                value = ErrorResult("%s: %s" % (type(exc).__name__, exc), None, exc)
            results.put((tunnel.host, value))

        feeder = gevent.spawn(lambda: [pool.spawn(run, t) for t in self.tunnels])
        pending = {t.host for t in self.tunnels}
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
        for host in [t.host for t in self.tunnels if t.host in pending]:
            yield host, past_deadline(host)

    def close(self) -> None:
        """Close every tunnel (they reconnect on next use)."""
        gevent.joinall([gevent.spawn(t.close) for t in self.tunnels])

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
