"""Locks, conditions, one-shot events and threads for the agent, on ``_thread`` alone. Remote-safe.

The agent's start is paid once per host: importing ``threading`` (and the ``functools`` and
``types`` it pulls in) costs a fresh agent about 1.5 ms of CPU, a tenth of its start, for
the few primitives below. Remote code that imports ``threading`` gets the real module; to
it, the agent's threads are threads it did not start (``threading._DummyThread``).
"""

from _thread import allocate_lock, get_ident, start_new_thread  # noqa: F401  (re-exported)

Lock = allocate_lock


class Condition(object):
    """``threading.Condition``'s ``wait`` and ``notify`` on a lock of ``allocate_lock()``."""

    def __init__(self, lock=None):
        self.lock = lock if lock is not None else allocate_lock()
        self.waiters = []

    def __enter__(self):
        return self.lock.__enter__()

    def __exit__(self, *exc):
        return self.lock.__exit__(*exc)

    def wait(self, timeout=None):
        """Release the lock (held by the caller) until notified or ``timeout``; True if notified."""
        waiter = allocate_lock()
        waiter.acquire()
        self.waiters.append(waiter)
        self.lock.release()
        try:
            notified = waiter.acquire(True, -1 if timeout is None else timeout)
        finally:
            self.lock.acquire()
        if not notified:
            try:
                self.waiters.remove(waiter)
            except ValueError:  # notified between the timeout and taking the lock back
                notified = True
        return notified

    def notify(self):
        """Wake the longest waiter, if any (the caller holds the lock)."""
        if self.waiters:
            self.waiters.pop(0).release()


class Event(object):
    """A one-shot ``threading.Event``: ``set`` once, ``wait`` by one thread."""

    def __init__(self):
        self.lock = allocate_lock()
        self.lock.acquire()

    def set(self):
        self.lock.release()

    def wait(self, timeout=None):
        return self.lock.acquire(True, -1 if timeout is None else timeout)


def start(target):
    """Run ``target()`` in a new thread (a daemon: the agent leaves with ``os._exit``)."""
    start_new_thread(target, ())
