"""``CallFuture``: the eventual result of one remote call. Controller-side.

Resolved from the hub (the connection's read callback), it switches straight into the
greenlet waiting for it instead of scheduling a callback round through the loop: on a
trivial call that is a noticeable share of the round trip.
"""

from typing import Any, Callable, List, Optional

import gevent
from gevent.hub import Waiter, get_hub
from greenlet import getcurrent

from chopsticks.errors import CallTimeout

_PENDING = object()


class CallFuture:
    """``result(timeout)``, ``done()``, ``exception()``, ``add_done_callback(fn)``, ``value``."""

    __slots__ = ("host", "req_id", "sending", "_value", "_error", "_waiters", "_callbacks")

    def __init__(self, host: str, req_id: int = 0):
        self.host = host
        self.req_id = req_id
        # the greenlet still writing the call, when the pipe did not take it all at once
        self.sending: Optional[gevent.Greenlet] = None
        self._value: Any = _PENDING
        self._error: Optional[BaseException] = None
        self._waiters: List[Waiter] = []
        self._callbacks: List[Callable[["CallFuture"], None]] = []

    def done(self) -> bool:
        return self._value is not _PENDING or self._error is not None

    def _resolve(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        if self.done():
            return
        if error is not None:
            self._error = error
        else:
            self._value = value
        hub = get_hub()
        in_hub = getcurrent() is hub
        # Take the lists first: a woken waiter runs (and edits its list) before we go on.
        waiters, self._waiters = self._waiters, []
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            hub.loop.run_callback(callback, self)
        for waiter in waiters:
            if in_hub:
                waiter.switch(None)
            else:
                hub.loop.run_callback(waiter.switch, None)

    def result(self, timeout: Optional[float] = None) -> Any:
        """The call's value; raises the call's error, or CallTimeout after ``timeout`` seconds."""
        if not self.done():
            waiter = Waiter()
            self._waiters.append(waiter)
            try:
                if timeout is None:
                    waiter.get()
                else:
                    with gevent.Timeout(timeout, False):
                        waiter.get()
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if not self.done():
                raise CallTimeout("[%s] call did not finish within %ss" % (self.host, timeout))
        if self._error is not None:
            raise self._error
        return self._value

    def stop_sending(self, wait: bool = True) -> None:
        """Stop a write of the call still under way (the caller gave up on it); returns once
        the writer is gone (``wait=False``, as the hub must: at once)."""
        if self.sending is not None:
            self.sending.kill(block=wait)

    def exception(self) -> Optional[BaseException]:
        return self._error

    def add_done_callback(self, fn: Callable[["CallFuture"], None]) -> None:
        """Call ``fn(future)`` (from the hub) once the call finishes."""
        if self.done():
            get_hub().loop.run_callback(fn, self)
        else:
            self._callbacks.append(fn)

    @property
    def value(self) -> Any:
        """The value, waiting for it if needed (the original chopsticks' name)."""
        return self.result()

    def __repr__(self) -> str:
        state = "pending" if not self.done() else ("failed" if self._error else "done")
        return "<CallFuture %s %s>" % (self.host, state)
