"""Awaitable calls, transfers and fan-outs, for asyncio programs. Callers layer.

The work runs in the hub thread (``chopsticks.hub``), in a greenlet of its own, and its
outcome comes back to the awaiting task through the task's loop (``asyncio.wrap_future``);
the loop is never blocked. Results, errors and timeouts are the gevent API's: the same
values, the same exception types (``CallTimeout``, ``RemoteException`` ...), the same
per-host ``ErrorResult``s and deadlines in a fan-out. Cancelling the awaiting task kills
that greenlet: a call it waits for is forgotten by its tunnel (its late result dropped, the
tunnel still usable), a start under way is stopped, and a fan-out's remaining hosts are
not started.

``TunnelAwaitables`` and ``GroupAwaitables`` give ``BaseTunnel`` and ``Group`` their
``a``-methods; ``run(fn, *args)`` awaits any gevent-style code of yours in the hub thread
(a ``Queue.run``, several calls in a row), ``iterate(make, *args)`` any stream.
"""

import asyncio
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from chopsticks import hub
from chopsticks.errors import WrongThread
from chopsticks.jobs import Call, Fetch, Put
from chopsticks.results import GroupResult

if TYPE_CHECKING:
    from chopsticks.tunnel import BaseTunnel


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a greenlet of the hub thread; its value, or its exception raised here.
    Cancelling the awaiting task kills that greenlet."""
    return await asyncio.wrap_future(hub.shared().submit(fn, *args))


async def iterate(make: Callable[..., Iterable[Any]], *args: Any) -> AsyncIterator[Any]:
    """The items of ``make(*args)``, iterated in a greenlet of the hub thread, as they come.
    Cancelling the task, or closing this iterator early (``aclose()``, ``contextlib.aclosing``;
    one dropped unclosed is closed by its loop later), kills that greenlet, which closes
    ``make``'s iterator there (for a fan-out: its remaining hosts are not started). An
    exception of ``make``'s iterator is raised here after the items it gave."""
    loop = asyncio.get_running_loop()
    items: "asyncio.Queue[Any]" = asyncio.Queue()

    def put(item: Any) -> None:  # in the hub thread
        loop.call_soon_threadsafe(items.put_nowait, item)

    task = hub.shared().submit(hub.pump, make, args, put)
    try:
        while True:
            item = await items.get()
            if item is hub.END:
                break
            yield item
        await asyncio.wrap_future(task)  # its exception, if it failed
    finally:
        task.cancel()


class TunnelAwaitables:
    """A tunnel's awaitable methods (``BaseTunnel`` has them). The tunnel runs in the hub
    thread: one connected by another thread's hub raises ``WrongThread`` (close it there
    first)."""

    # what ``BaseTunnel`` provides
    run_call: Callable[[Call], Any]
    put: Callable[..., Dict[str, Any]]
    fetch: Callable[..., Dict[str, Any]]
    connect: Callable[..., Any]
    close: Callable[[], None]

    async def acall(self, fn: Any, /, *args: Any, timeout: Optional[float] = None,
                    **kwargs: Any) -> Any:
        """``call``, awaited: ``fn(*args, **kwargs)`` on the remote, its value. ``timeout``
        raises ``CallTimeout``; cancelling the task forgets the call."""
        return await run(self.run_call, Call.of(fn, args, kwargs, timeout=timeout))  # pickled here, now

    async def aput(self, local_path: Any, remote_path: Optional[str] = None,
                   mode: Optional[int] = None, **options: Any) -> Dict[str, Any]:
        """``put``, awaited (the same options)."""
        return await run(lambda: self.put(local_path, remote_path, mode, **options))

    async def afetch(self, remote_path: str, local_path: Any = None, **options: Any
                     ) -> Dict[str, Any]:
        """``fetch``, awaited (the same options)."""
        return await run(lambda: self.fetch(remote_path, local_path, **options))

    async def aconnect(self, timeout: Optional[float] = None) -> Any:
        """``connect``, awaited: the agent started in the hub thread."""
        return await run(self.connect, timeout)

    async def aclose(self) -> None:
        """``close``, awaited."""
        await run(self.close)


class GroupAwaitables:
    """A group's awaitable methods (``Group`` has them): its fan-outs run in the hub thread,
    with their tunnels. A sharded group (``workers=``, ``cluster=``) is not taken."""

    # what ``Group`` provides
    tunnels: "List[BaseTunnel]"
    _driver: Any
    _stream: Callable[..., Iterator[Tuple[str, Any]]]
    _put_stream: Callable[..., Iterator[Tuple[str, Any]]]
    _close_tunnels: Callable[[], None]

    def _async_stream(self, results: Iterator[Tuple[str, Any]]) -> AsyncIterator[Tuple[str, Any]]:
        """``results`` (a stream not started yet: ``Group._stream``) iterated in the hub thread."""
        if self._driver is not None:
            raise WrongThread("a sharded group (workers=, cluster=) runs in the thread of its first fan-out; "
                              "the awaitable methods do not take it: use a group without workers= here")
        return iterate(lambda: results)

    def aiter_call(self, fn: Any, /, *args: Any, timeout: Optional[float] = None,
                   deadline: Optional[float] = None, **kwargs: Any) -> AsyncIterator[Tuple[str, Any]]:
        """``iter_call``, as an async iterator: ``(host, value or ErrorResult)`` as each host
        finishes. Cancelling the task, or closing the iterator early (``aclose()``), stops the
        fan-out: hosts not started yet are not, calls under way are forgotten."""
        return self._async_stream(self._stream(Call.for_hosts(fn, args, kwargs, timeout=timeout), deadline))

    async def acall(self, fn: Any, /, *args: Any, timeout: Optional[float] = None,
                    deadline: Optional[float] = None, **kwargs: Any) -> GroupResult:
        """``call``, awaited: a GroupResult in the group's order."""
        return await self._gather_async(self.aiter_call(fn, *args, timeout=timeout, deadline=deadline, **kwargs))

    def aiter_put(self, local_path: Any, remote_path: Optional[str] = None, mode: Optional[int] = None, *,
                  make_dirs: bool = False, timeout: Optional[float] = None, deadline: Optional[float] = None,
                  progress: Optional[Callable[[int], None]] = None, if_changed: bool = False,
                  sessions: Optional[int] = None, relay: Union[int, bool, None] = None
                  ) -> AsyncIterator[Tuple[str, Any]]:
        """``iter_put``, as an async iterator (``progress`` is called in the hub thread). A bad
        ``mode``, ``sessions`` or ``relay`` raises here; a local file that cannot be read, in
        the loop."""
        job = Put(local_path, remote_path, mode, make_dirs, timeout, progress, if_changed, sessions)
        return self._async_stream(self._put_stream(job, deadline, relay))

    async def aput(self, local_path: Any, remote_path: Optional[str] = None, mode: Optional[int] = None,
                   **options: Any) -> GroupResult:
        """``put``, awaited (the same options, ``callback`` aside)."""
        return await self._gather_async(self.aiter_put(local_path, remote_path, mode, **options))

    def aiter_fetch(self, remote_path: str, local_path: Any = None, *, make_dirs: bool = False,
                    timeout: Optional[float] = None, deadline: Optional[float] = None,
                    progress: Optional[Callable[[int], None]] = None,
                    sessions: Optional[int] = None) -> AsyncIterator[Tuple[str, Any]]:
        """``iter_fetch``, as an async iterator."""
        job = Fetch.for_hosts(remote_path, local_path, [t.host for t in self.tunnels], make_dirs=make_dirs,
                              timeout=timeout, progress=progress, sessions=sessions)
        return self._async_stream(self._stream(job, deadline))

    async def afetch(self, remote_path: str, local_path: Any = None, **options: Any) -> GroupResult:
        """``fetch``, awaited."""
        return await self._gather_async(self.aiter_fetch(remote_path, local_path, **options))

    async def aclose(self) -> None:
        """``close``, awaited: every tunnel closed in the hub thread."""
        await run(self._close_tunnels)

    async def _gather_async(self, results: AsyncIterator[Tuple[str, Any]]) -> GroupResult:
        arrived = {}
        async for host, result in results:
            arrived[host] = result
        return GroupResult((t.host, arrived[t.host]) for t in self.tunnels)
