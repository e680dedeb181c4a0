"""A gevent hub in an OS thread of its own, for callers that are not greenlets. Shard layer.

A Ray actor's methods run in threads of Ray's pool, one method at a time per thread: a hub
living in a method's thread would run its greenlets only while that method runs, so tunnels
kept open between fan-outs would miss their keepalives and reads. ``HubThread`` keeps one hub
running for the actor's life; work is handed to it with ``loop.run_callback_threadsafe`` and
answered through a ``concurrent.futures.Future`` (``submit``), and a greenlet there may feed a
thread-safe ``queue.Queue`` that the caller's thread reads (``spawn``).
"""

import concurrent.futures
import threading
from typing import Any, Callable, Optional

import gevent
import gevent.event


class HubThread:
    """One daemon thread running a gevent hub until ``stop()``."""

    def __init__(self, name: str = "chopsticks-hub"):
        self._ready = threading.Event()
        self._hub: Any = None
        self._stopped: Optional[gevent.event.Event] = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        self._hub = gevent.get_hub()
        self._stopped = gevent.event.Event()
        self._ready.set()
        self._stopped.wait()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> "concurrent.futures.Future[gevent.Greenlet]":
        """Start ``fn(*args)`` in a greenlet of this hub; the future gives that greenlet."""
        spawned: "concurrent.futures.Future[gevent.Greenlet]" = concurrent.futures.Future()
        self._hub.loop.run_callback_threadsafe(lambda: spawned.set_result(gevent.spawn(fn, *args)))
        return spawned

    def submit(self, fn: Callable[..., Any], *args: Any) -> "concurrent.futures.Future[Any]":
        """``fn(*args)`` run in a greenlet of this hub; its value or exception, as a future."""
        answer: "concurrent.futures.Future[Any]" = concurrent.futures.Future()

        def body() -> None:
            try:
                answer.set_result(fn(*args))
            except BaseException as exc:  # noqa: B902 - handed to the caller's thread, as raised
                answer.set_exception(exc)

        self.spawn(body)
        return answer

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``submit(fn, *args).result()``: run it in the hub, wait here."""
        return self.submit(fn, *args).result()

    def stop(self) -> None:
        """Let the thread end (its greenlets are left to die with it)."""
        stopped = self._stopped
        if stopped is not None:
            self._hub.loop.run_callback_threadsafe(stopped.set)
            self.thread.join()
