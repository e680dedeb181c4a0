"""Group: one call fanned out over many tunnels, through a bounded pool. API layer.

Strings become ``SSHTunnel``s sharing one ``SSHOptions``, one import service and one bound
on handshakes. Every host gets a result (a value or an ``ErrorResult``) in the group's
order; one host failing, hanging or refusing the login costs the others nothing beyond its
own ``timeout``, and ``deadline`` bounds the whole fan-out. Results also stream, as they
arrive, through ``iter_call`` or a ``callback``. Each fan-out's work is a job
(``chopsticks.jobs``: a call pickled once for every host, a put, a fetch) that the one
fan-out engine, ``jobs.fan_out``, maps over the tunnels.

``workers=N`` (or ``'auto'``: one per core) spreads the hosts over N shard processes
(``chopsticks.shards``), each with its own hub and its share of the tunnels, kept open there
between fan-outs; every method below works the same. The group's ``tunnels`` are then
stand-ins: the ``SSHTunnel``s made from the names, not connected in this process.
"""

import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import gevent

from chopsticks import hub
from chopsticks.aio import GroupAwaitables
from chopsticks.jobs import Call, Connect, Fetch, Job, Put, default_concurrency, fan_out
from chopsticks.options import TunnelOptions, replace
from chopsticks.results import GroupResult
from chopsticks.transports.ssh import HandshakeSlots, default_slots
from chopsticks.transports.ssh_options import SSHOptions
from chopsticks.ssh_tunnel import SSHTunnel
from chopsticks.tunnel import BaseTunnel

if TYPE_CHECKING:
    from chopsticks.shards.driver import Driver

Host = Union[str, BaseTunnel]
# Tunnels a Group's repr shows; past this, how many more.
REPR_TUNNELS = 20


class Group(GroupAwaitables):
    """Tunnels addressed together. ``Group(['web-1', 'web-2', Local('w')], user='deploy')``.

    Host names become ``SSHTunnel``s made with the SSH options given (one by one or as
    ``options=``) and the tunnel options (the fields of ``TunnelOptions``: ``python``,
    ``sudo``, ``connect_timeout``, ``max_result``, ``serve``; one by one or as
    ``tunnel_options=``), one object of each shared by all; tunnels passed in are used as
    they are.

    ``workers``: spread the hosts over this many shard processes (``'auto'``: one per core,
    at most one per host; None or 1: none, everything runs in this process), the handshake
    bound and ``concurrency`` split over them. Shards take SSH hosts only: with ``workers``
    given (and not 1), a ``Local``, a ``Docker`` or a tunnel with its own ``modules=`` is
    refused, as it cannot leave this process. Groups made from a sharded one (set
    operations, ``filter``, ``select``) share its shards and their open tunnels.

    ``handshake_slots``: the bound on concurrent SSH handshakes of the group's host names
    (a ``HandshakeSlots``; default: the process-wide one, 64), kept across shards.

    ``cluster``: run the shards as actors of a Ray cluster instead, spread over its nodes
    (an address such as ``'10.0.0.1:6379'``, or True for ``RAY_ADDRESS``; a process that
    already called ``ray.init`` uses that connection). ``workers`` then defaults to one shard
    per CPU the cluster offers, at most one per host. Needs ``pip install chopsticks[ray]``.
    """

    def __init__(self, hosts: Iterable[Host], *, concurrency: Optional[int] = None,
                 options: Optional[SSHOptions] = None, tunnel_options: Optional[TunnelOptions] = None,
                 workers: Union[int, str, None] = None, cluster: Any = None,
                 handshake_slots: Optional[HandshakeSlots] = None, **ssh_options):
        tunnel_options = (tunnel_options or TunnelOptions()).given(**TunnelOptions.take(ssh_options))
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
                # the process-wide import service (and handshake bound) are SSHTunnel's defaults
                tunnel: BaseTunnel = SSHTunnel(host, options=options, tunnel_options=tunnel_options,
                                               handshake_slots=handshake_slots)
            elif isinstance(host, BaseTunnel):
                tunnel = host
            else:
                raise TypeError("a Group takes host names and tunnels, not %r" % (host,))
            if tunnel.host in names:
                raise ValueError("two tunnels are named %r: results are keyed by name" % tunnel.host)
            names.add(tunnel.host)
            self.tunnels.append(tunnel)
        self._driver: Optional["Driver"] = None
        if workers is not None or cluster is not None:
            from chopsticks.shards import driver
            backend = driver.backend_for(cluster)
            count = driver.count_workers("auto" if workers is None else workers, len(self.tunnels),
                                         backend.cores())
            specs = [driver.spec_of(tunnel) for tunnel in self.tunnels] if workers != 1 or cluster else []
            if count > 1 or cluster is not None:
                self._driver = driver.for_group(count, (handshake_slots or default_slots()).limit, concurrency,
                                                backend)
                self._driver.place(specs)

    # -- a set of tunnels, by name ----------------------------------------------------------

    def _of(self, tunnels: List[BaseTunnel], concurrency: Optional[int]) -> "Group":
        """A group of ``tunnels``; a sharded group's shares its shards (and their open
        tunnels), new hosts placed in them."""
        group = type(self)([], concurrency=concurrency)
        group.tunnels = tunnels
        if self._driver is not None:
            from chopsticks.shards.driver import spec_of
            self._driver.place([spec_of(tunnel) for tunnel in tunnels])
            group._driver = self._driver
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
        return (self - other) | (Group([], concurrency=self.concurrency)._of(
            other.tunnels if isinstance(other, Group) else [other], self.concurrency) - self)

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
        # The original's form, ``Group([Docker('py35'), Docker('py36')])``, in full up to
        # REPR_TUNNELS tunnels: a fleet's repr in a log line or a traceback stays one line.
        shown = ", ".join(repr(t) for t in self.tunnels[:REPR_TUNNELS])
        more = ", ... %d more" % (len(self.tunnels) - REPR_TUNNELS) if len(self.tunnels) > REPR_TUNNELS else ""
        return "%s([%s%s])" % (type(self).__name__, shown, more)

    # -- fan-out ------------------------------------------------------------------------------

    def iter_call(self, fn, /, *args, timeout: Optional[float] = None, deadline: Optional[float] = None,
                  **kwargs) -> Iterator[Tuple[str, Any]]:
        """Run ``fn`` on every host; yield ``(host, value or ErrorResult)`` as each finishes.

        ``timeout`` bounds each host's call (its connect has the tunnel's own timeout);
        ``deadline`` (seconds) bounds the whole fan-out, the tunnels' starts included (no
        start begins after it, and one under way is stopped at it): hosts not finished then
        yield an ErrorResult wrapping CallTimeout. The call is pickled once for every host.
        """
        return self.iter_job(Call.for_hosts(fn, args, kwargs, timeout=timeout), deadline)

    def iter_job(self, job: Job, deadline: Optional[float] = None, ends_at: Optional[float] = None
                 ) -> Iterator[Tuple[str, Any]]:
        """Run a job (``chopsticks.jobs``: ``Call``, ``Put``, ``Fetch``, ``Connect``) on every
        host; yield ``(host, result)`` as each finishes. ``deadline`` as for ``iter_call``;
        ``ends_at``, a ``time.monotonic()`` instant, ends it instead (``jobs.fan_out``)."""
        return self._routed(self._stream(job, deadline, ends_at))

    def _stream(self, job: Job, deadline: Optional[float], ends_at: Optional[float] = None
                ) -> Iterator[Tuple[str, Any]]:
        """``job``'s stream over the group (its shards, if any), run by whichever thread
        iterates it: ``jobs.fan_out``, which starts nothing before the first ``next()``."""
        if self._driver is not None:
            return self._driver.iter_job(job, [t.host for t in self.tunnels], deadline, ends_at)
        return fan_out(job, self.tunnels, self.concurrency or default_concurrency(), deadline, ends_at)

    def _routed(self, results: Iterator[Tuple[str, Any]]) -> Iterator[Tuple[str, Any]]:
        """``results`` iterated where the group's tunnels run (``chopsticks.hub``): here, or
        in the hub thread, streamed back. A sharded group stays with the thread of its first
        fan-out (its driver refuses any other)."""
        there = None if self._driver is not None else hub.route(t.thread for t in self.tunnels)
        return results if there is None else hub.iterate(there, lambda: results)

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
            progress: Optional[Callable[[int], None]] = None, if_changed: bool = False,
            sessions: Optional[int] = None, relay: Union[int, bool, None] = None) -> GroupResult:
        """Copy a file (a path or a file object) or a directory tree to every host.

        ``{host}`` in ``remote_path`` becomes each host's name (``'/srv/conf/{host}.ini'``).
        The file is read once for all hosts, and a slow host delays only itself. Each host's
        result is ``BaseTunnel.put``'s dict or an ErrorResult; ``timeout`` bounds each host's
        transfer, ``deadline`` the whole; ``progress(nbytes)`` counts bytes sent to any host.
        A local file that cannot be read raises at once, before any host is contacted.
        ``if_changed`` skips the hosts whose file is already the same (its SHA-256 is
        computed once for all of them). ``sessions``: extra SSH sessions per host for a big
        file, as ``BaseTunnel.put``.

        ``relay``: send one file through relays (``chopsticks.relay_put``): each chunk goes
        once to each host the controller reaches directly, which passes it on to the hosts
        reached through it. ``True``: through the tunnels' own ``via=``; an int N: the first
        N hosts relay to N hosts each, and so on (a tree of degree N, each hop reached by the
        relay's own ``ssh`` with the group's SSH options). ``timeout`` then bounds the whole
        push, and a host that takes nothing for ``relay_put.STALL`` seconds is cut."""
        return self._gather(self.iter_put(local_path, remote_path, mode, make_dirs=make_dirs, timeout=timeout,
                                          deadline=deadline, progress=progress, if_changed=if_changed,
                                          sessions=sessions, relay=relay), callback)

    def iter_put(self, local_path, remote_path: Optional[str] = None, mode: Optional[int] = None, *,
                 make_dirs: bool = False, timeout: Optional[float] = None, deadline: Optional[float] = None,
                 progress: Optional[Callable[[int], None]] = None,
                 if_changed: bool = False, sessions: Optional[int] = None,
                 relay: Union[int, bool, None] = None) -> Iterator[Tuple[str, Any]]:
        """``put``, yielding ``(host, result)`` as each host finishes (through relays: once all
        have). A bad ``mode``, ``sessions`` or ``relay`` raises here; a local file that cannot
        be read on the first ``next()``."""
        job = Put(local_path, remote_path, mode, make_dirs, timeout, progress, if_changed, sessions)
        return self._routed(self._put_stream(job, deadline, relay))

    def _put_stream(self, put: Put, deadline: Optional[float], relay: Union[int, bool, None]
                    ) -> Iterator[Tuple[str, Any]]:
        """``put``'s stream, unrouted (``_stream``); a bad ``relay`` raises here."""
        if relay is None:
            return self._stream(put, deadline)
        from chopsticks import relay_put
        relay_put.check(relay)
        if put.sessions:
            raise ValueError("relay= and sessions= do not go together: a relayed file goes over the tunnels")
        if self._driver is not None:
            raise ValueError("relay= needs the group's tunnels in this process, not in shards (workers=)")
        if isinstance(put.local_path, (str, os.PathLike)) and os.path.isdir(put.local_path):
            raise ValueError("relay= sends one file; a directory tree goes without it")
        tunnels, made = (self.tunnels, []) if relay is True else relay_put.tree_of(self.tunnels, relay)
        return self._iter_relay_put(put, tunnels, made, deadline)

    def _iter_relay_put(self, put: Put, tunnels: List[BaseTunnel], made: List[BaseTunnel],
                        deadline: Optional[float]) -> Iterator[Tuple[str, Any]]:
        from chopsticks import relay_put
        from chopsticks.sources import Source
        try:
            source = Source(put.local_path)
        except BaseException:
            gevent.joinall([gevent.spawn(tunnel.close) for tunnel in reversed(made)])
            raise
        limit = min(x for x in (put.timeout, deadline) if x is not None) if (put.timeout or deadline) else None
        try:
            yield from relay_put.iter_put(tunnels, [t.host for t in self.tunnels], source, put.remote_path, put.mode,
                                          put.make_dirs, limit, put.progress, put.if_changed,
                                          self.concurrency or default_concurrency())
        finally:
            source.close()
            gevent.joinall([gevent.spawn(tunnel.close) for tunnel in reversed(made)])

    def fetch(self, remote_path: str, local_path=None, *, make_dirs: bool = False, timeout: Optional[float] = None,
              deadline: Optional[float] = None, callback: Optional[Callable[[str, Any], None]] = None,
              progress: Optional[Callable[[int], None]] = None, sessions: Optional[int] = None) -> GroupResult:
        """Copy a remote file (or tree) from every host to ``local_path.format(host=...)``
        (None: a temporary file each). A template that gives two hosts the same path is
        refused (ValueError) before anything is fetched. ``sessions``: extra SSH sessions per
        host for a big file, as ``BaseTunnel.fetch``."""
        return self._gather(self.iter_fetch(remote_path, local_path, make_dirs=make_dirs, timeout=timeout,
                                            deadline=deadline, progress=progress, sessions=sessions), callback)

    def iter_fetch(self, remote_path: str, local_path=None, *, make_dirs: bool = False,
                   timeout: Optional[float] = None, deadline: Optional[float] = None,
                   progress: Optional[Callable[[int], None]] = None,
                   sessions: Optional[int] = None) -> Iterator[Tuple[str, Any]]:
        """``fetch``, yielding ``(host, result)`` as each host finishes. A template that gives
        two hosts the same path, or a bad ``sessions``, raises here, not on the first ``next()``."""
        job = Fetch.for_hosts(remote_path, local_path, [t.host for t in self.tunnels], make_dirs=make_dirs,
                              timeout=timeout, progress=progress, sessions=sessions)
        return self.iter_job(job, deadline)

    def connect(self, deadline: Optional[float] = None) -> GroupResult:
        """Connect every tunnel now; None for each that connected, else an ErrorResult."""
        return self._gather(self.iter_job(Connect(), deadline), None)

    def close(self) -> None:
        """Close every tunnel (they reconnect on next use). A sharded group stops its shards
        (which groups made from it by set operations share); the next fan-out starts new ones."""
        if self._driver is not None:
            self._driver.close()
        there = hub.route(t.thread for t in self.tunnels)
        if there is not None:
            hub.run(there, self._close_tunnels)
        else:
            self._close_tunnels()

    def _close_tunnels(self) -> None:
        gevent.joinall([gevent.spawn(t.close) for t in self.tunnels])

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
