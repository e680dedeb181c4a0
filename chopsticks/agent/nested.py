"""The original's API for code running on a remote: tunnels it opens, groups, queues. Remote-safe.

On a remote, ``chopsticks.tunnel``, ``chopsticks.group``, ``chopsticks.queue`` and
``chopsticks.containers`` are this module (``agent.importer`` aliases them), so a task module
that imports them at its top imports on both sides, with the standard library alone here.

A tunnel opened here (``Local()``, ``Sudo('pg')``, ``Docker('app', container='app-1')``,
``SSHTunnel('db-7')``) is opened by the controller, through this agent's own tunnel
(``via=``): this agent starts the far agent's command and relays its bytes, and the
controller drives the far agent as any tunnel. So the far agent imports from the controller,
its results cross the controller's checks before they come back here, and the controller
limits how deep remote code may nest tunnels (``DepthLimitExceeded``, as in the original).
Calls from several threads go at once; each waits in its own thread.
"""

import pickle

from chopsticks.agent import main, threads
from chopsticks.errors import ChopsticksError, DepthLimitExceeded, RemoteException  # noqa: F401 (the API's)
from chopsticks.results import ErrorResult, GroupResult
from chopsticks.wire import mpack, protocol

# The pickle protocol of calls sent on: every supported Python reads it.
PROTOCOL = 4


def _ask(op, *args):
    """One request to the controller, answered when done (a call: when it returned)."""
    request = mpack.packb([op] + list(args))
    if len(request) > protocol.MAX_TUNNEL_REQUEST:
        raise ValueError("a call through a tunnel opened here takes at most %d bytes of pickled arguments, "
                         "not %d: send bulk data another way" % (protocol.MAX_TUNNEL_REQUEST, len(request)))
    reply = main.AGENT.request(protocol.TUNNEL, request, timeout=None)
    ok, value = pickle.loads(reply.payload)  # the controller's own pickle: it is trusted here
    if not ok:
        raise value
    return value


class BaseTunnel(object):
    """A tunnel the controller opens on this remote's behalf; ``kind`` names its class there."""

    kind = None

    def __init__(self, host, **options):
        self.host = host
        self.options = options
        self.tid = None

    def connect(self):
        if self.tid is None:
            self.tid = _ask("open", self.kind, self.host, self.options)
        return self

    def call(self, fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` there and return its value; its error raises
        ``RemoteException``. ``timeout=`` bounds the call, as on the controller."""
        timeout = kwargs.pop("timeout", None)
        payload = pickle.dumps((fn, args, kwargs), PROTOCOL)
        self.connect()
        module = getattr(fn, "__module__", None)
        return _ask("call", self.tid, payload, module if isinstance(module, str) else None, timeout)

    def close(self):
        tid, self.tid = self.tid, None
        if tid is not None:
            _ask("close", tid)

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.host)


class Local(BaseTunnel):
    kind = "Local"

    def __init__(self, name="localhost", **options):
        BaseTunnel.__init__(self, name, **options)


class Sudo(BaseTunnel):
    kind = "Sudo"

    def __init__(self, user="root", name=None, **options):
        options["user"] = user
        BaseTunnel.__init__(self, name or "%s@localhost" % user, **options)


class Docker(BaseTunnel):
    kind = "Docker"

    def __init__(self, name, image=None, rm=True, **options):
        if image is not None:
            options["image"] = image
        if not rm:
            options["rm"] = False
        BaseTunnel.__init__(self, name, **options)


class SSHTunnel(BaseTunnel):
    kind = "SSHTunnel"


Tunnel = SSHTunnel


class Group(object):
    """Tunnels called together: ``Group([Local('a'), Local('b')]).call(fn)`` is a
    ``GroupResult`` (host -> value or ``ErrorResult``), each host's call in a thread."""

    def __init__(self, hosts):
        self.tunnels = [host if isinstance(host, BaseTunnel) else SSHTunnel(host) for host in hosts]

    def call(self, fn, *args, **kwargs):
        return self._each(lambda tunnel: tunnel.call(fn, *args, **kwargs))

    def close(self):
        self._each(lambda tunnel: tunnel.close())

    def _each(self, work):
        results = [None] * len(self.tunnels)
        done = [threads.Event() for _ in self.tunnels]

        def run(index):
            try:
                results[index] = work(self.tunnels[index])
            except ChopsticksError as exc:
                results[index] = ErrorResult.from_exception(exc)
            finally:
                done[index].set()
        for index in range(len(self.tunnels)):
            threads.start(lambda index=index: run(index))
        for event in done:
            event.wait()
        return GroupResult((tunnel.host, value) for tunnel, value in zip(self.tunnels, results))

    def __iter__(self):
        return iter(self.tunnels)

    def __len__(self):
        return len(self.tunnels)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return "Group(%r)" % (self.tunnels,)


class AsyncResult(object):
    """A queued call's eventual value (``value`` once ``Queue.run`` has run it)."""

    def __init__(self):
        self.value = None
        self.callbacks = []

    def with_callback(self, callback):
        self.callbacks.append(callback)
        return self


class Queue(object):
    """Calls queued per tunnel and run by ``run()``: each tunnel's in order, the tunnels at
    once. A failed call's value is its ``ErrorResult``; a callback runs with each value."""

    def __init__(self):
        self.fifos = {}  # tunnel -> [(fn, args, kwargs, AsyncResult)]

    def call(self, target, fn, *args, **kwargs):
        tunnels = list(target) if isinstance(target, Group) else [target]
        results = [AsyncResult() for _ in tunnels]
        for tunnel, result in zip(tunnels, results):
            self.fifos.setdefault(tunnel, []).append((fn, args, kwargs, result))
        return results[0] if len(results) == 1 else results

    def run(self):
        while self.fifos:
            fifos, self.fifos = self.fifos, {}
            Group(list(fifos))._each(lambda tunnel: self._run_fifo(tunnel, fifos[tunnel]))

    @staticmethod
    def _run_fifo(tunnel, fifo):
        for fn, args, kwargs, result in fifo:
            try:
                result.value = tunnel.call(fn, *args, **kwargs)
            except ChopsticksError as exc:
                result.value = ErrorResult.from_exception(exc)
            for callback in result.callbacks:
                callback(result.value)
