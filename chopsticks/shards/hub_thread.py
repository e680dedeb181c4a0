"""A gevent hub in an OS thread of its own, for callers that are not greenlets. Shard layer.

A Ray actor's methods run in threads of Ray's pool, one method at a time per thread: a hub
living in a method's thread would run its greenlets only while that method runs, so tunnels
kept open between fan-outs would miss their keepalives and reads. ``HubThread`` keeps one hub
running for the actor's life; work is handed to it through a thread-safe queue and an async
watcher that wakes the hub (the watcher also keeps the hub's loop alive while it waits for
work: a loop with no watcher would end at once) and answered through a
``concurrent.futures.Future`` (``submit``); a greenlet there may feed a thread-safe
``queue.Queue`` that the caller's thread reads (``spawn``). ``Inbox`` is that hand-over on its
own: what any thread puts in, a hub's callback takes out (the driver's Ray readers use it too).
The process's hub thread for callers outside gevent (``chopsticks.hub``) is one too; cancelling
a ``submit``'s future kills the greenlet doing the work.
"""

import concurrent.futures
import queue
import threading
from typing import Any, Callable, Optional

import gevent
import gevent.event


class Inbox:
    """Items put in from any thread, each given to ``take(item)`` in the hub of the thread that
    made the inbox (woken by an async watcher, which also keeps that hub's loop alive while
    started: a hub waiting only on other threads would see nothing to wait for)."""

    def __init__(self, take: Callable[[Any], None]):
        self._take = take
        self._items: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._wake = gevent.get_hub().loop.async_()
        self._wake.start(self._drain)
        self._closed = False

    def put(self, item: Any) -> None:
        """From any thread; nothing once closed."""
        if self._closed:
            return
        self._items.put(item)
        try:
            self._wake.send()
        except Exception:  # closed meanwhile, from the hub
            if not self._closed:
                raise

    def _drain(self) -> None:  # in the hub
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                return
            self._take(item)

    def stop(self) -> None:
        """In the hub: take nothing more, and let the loop end without it."""
        self._wake.stop()

    def close(self) -> None:
        """In the hub: take nothing more, ever; what threads still running put is dropped."""
        self._closed = True
        self._wake.stop()
        self._wake.close()


def _settle(setter: Callable[[Any], None], outcome: Any) -> None:
    """Give a future its outcome, unless it was cancelled meanwhile (from another thread)."""
    try:
        setter(outcome)
    except concurrent.futures.InvalidStateError:
        pass


class HubThread:
    """One daemon thread running a gevent hub until ``stop()``."""

    def __init__(self, name: str = "chopsticks-hub"):
        self._ready = threading.Event()
        self._inbox: Optional[Inbox] = None
        self._stopped: Optional[gevent.event.Event] = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        self._stopped = gevent.event.Event()
        self._inbox = Inbox(lambda work: work())
        self._ready.set()
        self._stopped.wait()
        self._inbox.stop()

    def _handoff(self, work: Callable[[], Any]) -> None:
        assert self._inbox is not None
        self._inbox.put(work)

    def post(self, work: Callable[[], Any]) -> None:
        """``work()`` called soon in the hub itself, from any thread: it must not block
        (``submit`` gives it a greenlet)."""
        self._handoff(work)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> "concurrent.futures.Future[gevent.Greenlet]":
        """Start ``fn(*args)`` in a greenlet of this hub; the future gives that greenlet."""
        spawned: "concurrent.futures.Future[gevent.Greenlet]" = concurrent.futures.Future()
        self._handoff(lambda: spawned.set_result(gevent.spawn(fn, *args)))
        return spawned

    def submit(self, fn: Callable[..., Any], *args: Any) -> "concurrent.futures.Future[Any]":
        """``fn(*args)`` run in a greenlet of this hub; its value or exception, as a future.

        Cancelling the future, from any thread, kills that greenlet (a ``GreenletExit``
        where it waits), or keeps it from starting; nothing waits for it to end. (The
        future is never marked running, so ``cancel()`` works until it is done.)"""
        answer: "concurrent.futures.Future[Any]" = concurrent.futures.Future()

        def body() -> None:
            try:
                value = fn(*args)
            except gevent.GreenletExit:
                answer.cancel()  # killed: its future was cancelled (or the hub is stopping)
                return
            except BaseException as exc:  # noqa: B902 - handed to the caller's thread, as raised
                _settle(answer.set_exception, exc)
                return
            _settle(answer.set_result, value)

        def start() -> None:  # in the hub
            if answer.cancelled():
                return
            greenlet = gevent.spawn(body)

            def killed(done: "concurrent.futures.Future[Any]") -> None:
                if done.cancelled():
                    self._handoff(lambda: greenlet.kill(block=False))
            # runs at once if the future is already done (then in the hub: the kill is posted)
            answer.add_done_callback(killed)

        self._handoff(start)
        return answer

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``submit(fn, *args).result()``: run it in the hub, wait here."""
        return self.submit(fn, *args).result()

    def stop(self) -> None:
        """Let the thread end (its greenlets are left to die with it)."""
        stopped = self._stopped
        if stopped is not None:
            self._handoff(stopped.set)
            self.thread.join()
