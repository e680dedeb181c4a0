"""The hub thread: tunnels for callers that are not gevent code. Callers layer.

gevent drives a tunnel only while some greenlet of its hub waits: from a plain OS thread, or
under a running asyncio loop, nothing would. So the library keeps, for the process, one
gevent hub in a daemon thread of its own (``shards.hub_thread.HubThread``, named
``chopsticks-hub``), started on first need and never stopped (the agents it runs see their
stdin end when the process exits; a fork's child starts its own). Where work runs:

- A tunnel belongs to the hub that connected it, and is bound when it connects: code in a
  greenlet, and plain code of the main thread, connect it in their own hub (the gevent API,
  unchanged); plain code of any other thread, and code under a running asyncio loop in any
  thread (a script's ``asyncio.run``, a notebook's kernel), connect it in the hub thread.
- A use of a tunnel the hub thread runs, from anywhere else, is handed to it and waited for
  (``run``); a fan-out is handed over whole (``iterate``), its results streamed back as hosts
  finish. The awaitable methods (``chopsticks.aio``) always run there.
- A use of a tunnel another thread's hub runs raises ``WrongThread``, as before.

Work crosses with ``HubThread.submit`` (an async watcher wakes the hub; a
``concurrent.futures.Future`` answers); cancelling that future kills the greenlet doing the
work, and a call killed while it waits is forgotten by its tunnel (``BaseTunnel.run_call``).
"""

import os
import queue
import sys
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterable, Iterator, Optional

import gevent
from gevent.hub import Waiter, _get_hub  # _get_hub: the calling thread's hub, or None (makes none)
from greenlet import getcurrent

from chopsticks.errors import CallTimeout
from chopsticks.shards.hub_thread import HubThread

THREAD_NAME = "chopsticks-hub"

_lock = threading.Lock()
_hub: Optional[HubThread] = None  # the process's hub thread, once started
_forks_watched = False


def running() -> Optional[HubThread]:
    """The hub thread, if it was started (this never starts it)."""
    return _hub


def shared() -> HubThread:
    """The hub thread, started now if it was not."""
    global _hub, _forks_watched
    hub = _hub
    if hub is not None:
        return hub
    with _lock:
        if _hub is None:
            if not _forks_watched:  # a fork's child has no such thread: it starts its own
                os.register_at_fork(after_in_child=_forget)
                _forks_watched = True
            _hub = HubThread(THREAD_NAME)
        return _hub


def _forget() -> None:
    global _hub, _lock
    _hub, _lock = None, threading.Lock()


def in_hub_thread() -> bool:
    hub = _hub
    return hub is not None and hub.thread.ident == threading.get_ident()


def outside_gevent() -> bool:
    """Whether the caller is not gevent code: plain code of a thread other than the main one,
    or plain code under an asyncio loop running in this thread. A greenlet is gevent code."""
    if getcurrent().parent is not None:  # a greenlet some hub runs (or that hub itself)
        return False
    if threading.current_thread() is not threading.main_thread():
        return True
    asyncio = sys.modules.get("asyncio")  # no loop can run before it is imported
    return asyncio is not None and asyncio._get_running_loop() is not None


def route_one(owner: Optional[threading.Thread]) -> Optional[HubThread]:
    """Where a use of a tunnel runs whose hub is ``owner``'s (None: not connected): None
    here, else the hub thread to hand it to (the one that runs it, or, for a tunnel to
    connect, the one that serves callers outside gevent). Here may still be the wrong
    thread: the tunnel's own check raises ``WrongThread`` then."""
    if owner is None:
        return shared() if outside_gevent() else None
    hub = _hub
    if hub is not None and owner is hub.thread and owner.ident != threading.get_ident():
        return hub
    return None


def route(owners: Iterable[Optional[threading.Thread]]) -> Optional[HubThread]:
    """``route_one`` for a fan-out over tunnels whose hubs are ``owners``': handed over if
    one of them is the hub thread's, here if one is this thread's, else by the caller."""
    hub = _hub
    me = threading.get_ident()
    if hub is not None and hub.thread.ident == me:
        return None
    mine = False
    for owner in owners:
        if owner is not None:
            if hub is not None and owner is hub.thread:
                return hub
            mine = mine or owner.ident == me
    return None if mine else route_one(None)


def run(hub: HubThread, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a greenlet of ``hub``; its value here, or its exception raised here.
    An exception that ends the wait here (a Ctrl-C, a gevent timeout) kills that greenlet."""
    return wait(hub.submit(fn, *args))


def wait(future: "Future[Any]", cancel: bool = True, timeout: Optional[float] = None) -> Any:
    """The outcome of ``future``, resolved in another thread. A thread with a gevent hub
    waits in it, so that its other greenlets go on; a plain thread blocks. An exception
    that ends the wait cancels ``future`` (unless ``cancel`` is false); past ``timeout``
    seconds, ``concurrent.futures.TimeoutError``."""
    here = _get_hub()
    try:
        if here is None or getcurrent() is here:
            return future.result(timeout)
        with gevent.Timeout(timeout, False):
            _Wake(here, future).wait()
        return future.result(0)
    except BaseException:
        if cancel:
            future.cancel()
        raise


class _Wake:
    """Wakes a greenlet of ``here``'s hub once ``future`` is done (in whatever thread): an
    async watcher of that hub, sent once and closed in that hub when it fires, never before,
    so that a late send never finds it closed. While started it keeps that loop alive."""

    def __init__(self, here: Any, future: "Future[Any]"):
        self.waiter = Waiter(here)
        self.watcher = here.loop.async_()
        self.watcher.start(self._fired)
        future.add_done_callback(lambda _: self.watcher.send())

    def _fired(self) -> None:  # in the waiting thread's hub
        self.watcher.close()
        self.waiter.switch(None)

    def wait(self) -> None:
        self.waiter.get()


# The end of a stream handed across threads (``pump``).
END = object()


def pump(make: Callable[..., Iterable[Any]], args: Any, put: Callable[[Any], None]) -> None:
    """In the hub: each item of ``make(*args)`` given to ``put`` (thread-safe, never
    blocking), then ``END``, also when it fails or is killed (its exception is the task's)."""
    try:
        for item in make(*args):
            put(item)
    finally:
        try:
            put(END)
        except RuntimeError:  # an asyncio loop closed meanwhile: nobody reads any more
            pass


def iterate(hub: HubThread, make: Callable[..., Iterable[Any]], *args: Any) -> Iterator[Any]:
    """The items of ``make(*args)``, iterated in a greenlet of ``hub``, as they come. Closing
    this iterator early (or an exception while it waits) kills that greenlet, which closes
    ``make``'s iterator there: a fan-out's remaining hosts are not started."""
    items: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
    task = hub.submit(pump, make, args, items.put)
    here = _get_hub()
    # in a thread with a hub, a pool thread waits (pump always ends with END, so it returns)
    get = items.get if here is None or getcurrent() is here else lambda: here.threadpool.apply(items.get)
    try:
        while True:
            item = get()
            if item is END:
                break
            yield item
        wait(task)  # its exception, if it failed
    finally:
        task.cancel()


class ThreadCallFuture:
    """``call_async``'s future for a caller outside the hub that runs the tunnel: a
    ``CallFuture``'s methods, safe from any thread. ``add_done_callback`` functions run in the
    hub thread; ``cancel()`` stops waiting for the call (its late result is dropped)."""

    def __init__(self, host: str, future: "Future[Any]"):
        self.host = host
        self._future = future

    def result(self, timeout: Optional[float] = None) -> Any:
        """The call's value; raises the call's error, or CallTimeout after ``timeout`` seconds."""
        try:
            return wait(self._future, cancel=False, timeout=timeout)
        except FutureTimeout:
            raise CallTimeout("[%s] call did not finish within %ss" % (self.host, timeout)) from None

    def done(self) -> bool:
        return self._future.done()

    def exception(self) -> Optional[BaseException]:
        return self._future.exception(0) if self._future.done() and not self._future.cancelled() else None

    def add_done_callback(self, fn: Callable[["ThreadCallFuture"], None]) -> None:
        self._future.add_done_callback(lambda _: fn(self))

    def cancel(self) -> bool:
        return self._future.cancel()

    @property
    def value(self) -> Any:
        return self.result()

    def __repr__(self) -> str:
        state = "pending" if not self.done() else ("failed" if self.exception() else "done")
        return "<ThreadCallFuture %s %s>" % (self.host, state)
