"""Tunnels: one connection each to a remote agent, with ``call``, ``put`` and ``fetch``. API layer.

A tunnel connects lazily on first use, can be closed and used again (it reconnects), and is
a context manager. Subclasses only say how to start a pipe whose other end is the remote
``python`` (``_open_pipe``; for a local command, ``SubprocessTunnel.cmd_args``); everything
else is shared. Tunnels are driven by gevent. A connected tunnel belongs to the hub that
connected it: gevent code's own (a greenlet's, or plain code's of the main thread), or, for
plain code of other threads and code under a running asyncio loop, the hub thread's
(``chopsticks.hub``), to which the public methods then hand their work from any thread. A use
of a tunnel another thread's hub runs raises ``WrongThread`` at once (it would wait forever).
The awaitable methods (``acall`` ...) come from ``chopsticks.aio``.
"""

import functools
import os
import signal
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import gevent
import gevent.lock
from gevent.hub import _get_hub, get_hub  # _get_hub: the calling thread's hub, or None (makes none)

from chopsticks import bootstrap, hub
from chopsticks.aio import TunnelAwaitables
from chopsticks.bootstrap import EXIT_OLD_PYTHON
from chopsticks.connection import Connection, Explained
from chopsticks.errors import ChopsticksError, ConnectError, ConnectTimeout, PythonNotFound, TunnelClosed, WrongThread
# the original's homes of these: code written for it imports them from here
from chopsticks.errors import DepthLimitExceeded, RemoteException  # noqa: F401
from chopsticks.results import ErrorResult  # noqa: F401
from chopsticks.future import CallFuture
from chopsticks.jobs import Call
from chopsticks.modules import ImportService, shared_server
from chopsticks.nesting import Nested
# the defaults stay importable from here (tests and bench/ do)
from chopsticks.options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESULT, TunnelOptions  # noqa: F401
from chopsticks.transports import Pipe
from chopsticks.transports.libssh import Login
from chopsticks.transports.process import ProcessPipe
from chopsticks.sudo import SudoPrompt
from chopsticks.transports.relayed import RelayPipe

# Exit statuses of a shell that could not run the interpreter.
NOT_FOUND_STATUSES = (126, 127)


def _system_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


def _weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a tunnel, called while the tunnel lives (None after): what a connection
    keeps of its tunnel, so that a tunnel dropped without ``close()`` can be collected."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args)
    return call


def _close_dropped(conn: Connection, owner: "weakref.ref[Any]", hub_thread: "Optional[hub.HubThread]") -> None:
    """The finalizer of a connected tunnel deleted or collected without ``close()``: its agent
    goes (and its process or container with it), as the original's ``__del__`` did.

    It runs wherever the last reference went, perhaps in another thread, so it never blocks
    and never raises, and it holds the connection only, never the tunnel. In the owner's
    thread, the close runs later in a greenlet of that thread's hub, and so it does when the
    owner is the hub thread (``hub_thread``, which any thread may post to); in another
    thread, whose hub it must not touch, it only signals the local process (the podman or
    sudo in front of the agent passes the signal on), and the connection ends in its own hub
    as if the agent had died. At interpreter exit nothing is needed: the agents see their
    stdin end."""
    try:
        if conn.closed:
            return
        owner_hub = owner()
        if owner_hub is not None and _get_hub() is owner_hub:  # the owner's thread (not one that reused its ident)
            gevent.spawn(conn.close)
        elif hub_thread is not None:
            hub_thread.post(lambda: gevent.spawn(conn.close))
        elif isinstance(conn.pipe, ProcessPipe) and conn.pipe.proc.returncode is None:  # not reaped: its pid
            os.kill(conn.pipe.proc.pid, signal.SIGTERM)
        # else an SSH channel dropped in another thread: it ends with its session, at the
        # owner's next close of that login or at exit (nothing thread-safe can end it here)
    except Exception:  # noqa: S110 (a finalizer must not raise; the process is gone or going)
        pass


class BaseTunnel(TunnelAwaitables):
    """What every tunnel does; subclasses implement ``_open_pipe(timeout)``.

    Every kind of tunnel takes ``python``, ``connect_timeout``, ``max_result``, and
    ``serve``: names of modules or packages its remote may import from here beyond what
    the controller has imported itself (see ``chopsticks.modules``), or ``modules``, an
    import service of your own. These may also come as one shared ``tunnel_options=``
    (``chopsticks.options.TunnelOptions``), which the keywords given override; the tunnel
    reads them from there alone."""

    #: The interpreter when the options name none (None: the system's ``python3``); a kind of
    #: tunnel (or a subclass written for the original chopsticks) sets its own.
    python3: Optional[str] = None
    #: Whether this kind of tunnel can run its agent under ``sudo`` (the option is SSH's).
    takes_sudo = False
    #: Whether it can answer sudo's password prompt (``sudo_password=``: ``Sudo``, ``SSHTunnel``).
    takes_sudo_password = False
    #: How deep this tunnel is nested: 1 for the controller's own, one more for each
    #: level of remote code that opened it (``chopsticks.nesting``).
    depth = 1

    def __init__(self, host: str, *, python: Optional[str] = None, connect_timeout: Optional[float] = None,
                 max_result: Optional[int] = None, modules: Optional[ImportService] = None,
                 serve: Optional[Iterable[str]] = None, tunnel_options: Optional[TunnelOptions] = None,
                 via: "Optional[BaseTunnel]" = None, sudo_password: Optional[str] = None):
        if not isinstance(host, str) or not host:
            raise ValueError("a tunnel needs a non-empty name, got %r" % (host,))
        if via is not None and not isinstance(via, BaseTunnel):
            raise TypeError("via= takes a tunnel (the host that starts this one's agent), got %r" % (via,))
        self.tunnel_options = options = (tunnel_options or TunnelOptions()).given(
            python=python, connect_timeout=connect_timeout, max_result=max_result, serve=serve,
            sudo_password=sudo_password)
        if options.sudo and not self.takes_sudo:
            raise TypeError("%s has no sudo option (an SSH tunnel's); a local agent as another user is "
                            "Sudo(user)" % type(self).__name__)
        if sudo_password is not None and not self.takes_sudo_password:
            raise TypeError("%s runs no sudo: sudo_password= is for Sudo and SSHTunnel(sudo=...)"
                            % type(self).__name__)
        #: The name given; ``host`` is the whole path for a tunnel through another one
        #: (``web-1 -> app``), as its results, errors and output lines name it.
        self.name = host
        #: The tunnel whose agent starts this one's and carries its bytes, or None.
        self.via = via
        self.host: str = host if via is None else "%s -> %s" % (via.host, host)
        if modules is not None and options.serve:
            raise ValueError("give serve= to the ModuleServer passed as modules=, not to the tunnel")
        # what remotes may import from here: see chopsticks.modules
        self.modules = modules or shared_server(options.serve)
        self._conn: Optional[Connection] = None
        self._thread: Optional[threading.Thread] = None  # whose hub runs self._conn
        self._connect_lock = gevent.lock.Semaphore()
        self._finalizer: Optional[weakref.finalize] = None  # closes the agent if the tunnel is dropped
        self._sudo_prompt: Optional[SudoPrompt] = None  # the current start's, with sudo_password

    # -- the options, read-only ------------------------------------------------------------

    @property
    def python(self) -> str:
        """The remote interpreter: the options' ``python``, else this kind's default."""
        return self.tunnel_options.python or self.python3 or _system_python()

    @property
    def connect_timeout(self) -> float:
        return self.tunnel_options.connect_timeout

    @property
    def max_result(self) -> int:
        return self.tunnel_options.max_result

    # -- what subclasses provide -----------------------------------------------------------

    def _open_pipe(self, timeout: float, until: Optional[float] = None) -> Tuple[Pipe, float]:
        """Start the remote ``python`` (``bootstrap.python_argv(self.python)``) within
        ``timeout`` seconds, and by ``until`` (a ``time.monotonic()`` instant), if given,
        queueing for a shared resource included.

        Returns the pipe and when the work started (after any queueing for a shared
        resource, which the connect timeout does not count)."""
        raise NotImplementedError

    def _relayed_argv(self, via: Connection, until: float) -> List[str]:
        """The command that ``via``'s agent runs to start this tunnel's agent on its host,
        known by ``until`` (a ``time.monotonic()`` instant) if it must ask that agent."""
        raise TypeError("%s cannot be reached through another tunnel (via=)" % type(self).__name__)

    def _open_relayed(self, timeout: float, until: Optional[float]) -> Tuple[Pipe, float]:
        """``_open_pipe`` for a tunnel with ``via``: its agent is started by the intermediate's."""
        assert self.via is not None
        try:
            via = self.via.connection(None if until is None else max(0.0, until - time.monotonic()))
        except TunnelClosed:
            raise ConnectError("[%s] the tunnel through %s was closed meanwhile" % (self.host, self.via.host)) from None
        started = time.monotonic()  # what the command takes to learn counts as the start's
        argv = self._relayed_argv(via, started + timeout if until is None else min(started + timeout, until))
        return RelayPipe(via, argv), started

    def _sudo_user(self) -> Optional[str]:
        """Whom sudo runs this tunnel's agent as, or None (no sudo)."""
        return None

    def _explain_failed_start(self, status: Optional[int], stderr: List[str]) -> Optional[Explained]:
        """Why the agent ended before it started, as ``(exception class, message)``, when
        this kind of tunnel can tell better than an exit status; else None. The one hook for
        start-failure diagnostics: a kind of tunnel extends it (``Docker``, ``Sudo``)."""
        if status == EXIT_OLD_PYTHON or status in NOT_FOUND_STATUSES:
            return PythonNotFound, "no usable Python on the remote (exit status %s)" % status
        return None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @property
    def closed(self) -> bool:
        return not self.connected

    @property
    def remote_info(self) -> Optional[Dict[str, Any]]:
        """What the agent said of itself (pid, Python version, executable), once connected."""
        return self._conn.hello if self.connected and self._conn else None

    @property
    def thread(self) -> Optional[threading.Thread]:
        """The thread whose gevent hub runs this tunnel's connection (also once its agent has
        died, until a close or the next start); None while it has none."""
        return self._thread if self._conn is not None else None

    def _elsewhere(self) -> "Optional[hub.HubThread]":
        """The hub thread to hand a use of this tunnel to, or None: it runs here (``chopsticks.hub``)."""
        return hub.route_one(self._thread if self._conn is not None else None)

    def _check_thread(self) -> None:
        """Refuse a use from an OS thread other than the one whose hub runs the connection:
        nothing would ever wake it there (or gevent would fail deep inside)."""
        owner = self._thread
        if self._conn is not None and owner is not None and owner.ident != threading.get_ident():
            if hub.in_hub_thread():
                raise WrongThread(
                    "[%s] this tunnel runs in the gevent hub of thread %r (gevent code connected it there), "
                    "so the hub thread that serves asyncio and other threads cannot use it: close() it in "
                    "thread %r first (it then reconnects in the hub thread), or use it from there"
                    % (self.host, owner.name, owner.name))
            raise WrongThread(
                "[%s] this tunnel runs in the gevent hub of thread %r and cannot be used from thread %r: "
                "use it from that thread (or a greenlet there), or hand the work to that thread (an SSH "
                "tunnel may also be opened in this one)" % (self.host, owner.name, threading.current_thread().name))

    def connect(self, timeout: Optional[float] = None) -> "BaseTunnel":
        """Start the remote agent now (calls do it on demand). Idempotent.

        ``timeout`` bounds this start from now, waiting for a shared resource included (a
        fan-out passes what is left of its deadline); ``connect_timeout`` bounds it as well,
        from when the work starts. Past either: ``ConnectTimeout``, and whatever was started
        for it is stopped. Nothing is started once ``timeout`` has passed."""
        there = self._elsewhere()
        if there is not None:
            hub.run(there, self.connection, timeout)
        else:
            self.connection(timeout)
        return self

    def connection(self, timeout: Optional[float] = None) -> Connection:
        """The agent's connection, started in this hub if needed (``connect``'s ``timeout``),
        for the layers that drive it (transfers, relays). Never handed to another thread: a
        tunnel another thread's hub runs raises ``WrongThread``; one closed meanwhile by
        another greenlet, ``TunnelClosed``."""
        self._check_thread()
        conn = self._conn
        if conn is None or conn.closed:
            self._connect_here(timeout)
            self._check_thread()  # another thread's hub may have connected it meanwhile
            conn = self._conn
            if conn is None:
                raise TunnelClosed("[%s] the tunnel was closed" % self.host)
        return conn

    def _connect_here(self, timeout: Optional[float]) -> None:
        until = None if timeout is None else time.monotonic() + timeout
        if not self._connect_lock.acquire(timeout=None if until is None else max(0.0, until - time.monotonic())):
            raise ConnectTimeout("[%s] another start of this tunnel did not finish within %ss" % (self.host, timeout))
        try:
            if not self.connected:
                if until is not None and until <= time.monotonic():
                    raise ConnectTimeout("[%s] the agent was not started: its %ss had passed" % (self.host, timeout))
                self._conn = self._start(until, timeout)
                self._thread = threading.current_thread()
                self._watch_for_drop(self._conn)
        finally:
            self._connect_lock.release()

    def _watch_for_drop(self, conn: Connection) -> None:
        """Close ``conn``'s agent if this tunnel is deleted or collected unclosed (``_close_dropped``)."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _close_dropped, conn, weakref.ref(get_hub()),
                                           hub.running() if hub.in_hub_thread() else None)
        self._finalizer.atexit = False  # at exit the agents see their stdin end

    def _start(self, until: Optional[float], timeout: Optional[float]) -> Connection:
        """A started agent's connection, by ``until`` if given (``timeout`` from the
        caller's now), and within ``connect_timeout``."""
        options = self.tunnel_options
        bundle = bootstrap.bundle_for(options.max_result)
        sudo_user = self._sudo_user()
        gate = self._sudo_prompt = SudoPrompt(options.sudo_password) if options.sudo_password and sudo_user else None
        open_pipe = self._open_pipe if self.via is None else self._open_relayed
        try:
            pipe, started = open_pipe(options.connect_timeout, until)
        except ChopsticksError:
            raise
        except FileNotFoundError as exc:
            raise PythonNotFound("[%s] cannot start %s: %s" % (self.host, self.python, exc)) from exc
        except OSError as exc:
            raise ConnectError("[%s] cannot start the agent: %s" % (self.host, exc)) from exc
        conn = Connection(self.host, pipe, self.modules, options.max_result,
                          explain=_weakly(self._explain_failed_start), nested=Nested(self), gate=gate)
        remaining, stated = options.connect_timeout - (time.monotonic() - started), options.connect_timeout
        if until is not None and until - time.monotonic() < remaining:
            remaining, stated = until - time.monotonic(), timeout or 0.0
        try:
            conn.handshake(bundle.stdin_bytes(), max(0.001, remaining), stated)
            if gate is not None and gate.refused:
                raise gate.error(self.host, str(sudo_user))
        except BaseException:
            # also when cancelled from outside (a group's deadline, the caller's own
            # timeout, Ctrl-C): what was started must not outlive the attempt
            conn.close(kill=True)
            raise
        return conn

    def close(self) -> None:
        """Stop the agent and release its process and pipes. The tunnel can be used again."""
        there = self._elsewhere() if self._conn is not None else None
        if there is not None:
            return hub.run(there, self.close)
        self._check_thread()
        with self._connect_lock:  # a connect in progress finishes first, then is closed
            conn, self._conn = self._conn, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "BaseTunnel":
        return self.connect()

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        # The original's form (``Docker('py36')``), which code and doctests written for it may
        # print or compare; the state is ``connected`` (and an SSH tunnel's ``destination``).
        if self.via is not None:
            return "%s(%r, via=%r)" % (type(self).__name__, self.name, self.via)
        return "%s(%r)" % (type(self).__name__, self.name)

    def __or__(self, other):
        """A tunnel acts as a group of one: ``tun1 | tun2`` (or ``+``) is a Group."""
        from chopsticks.group import Group
        return Group([self]) | other

    __add__ = __or__

    # -- calls -----------------------------------------------------------------------------

    def submit(self, call: Call) -> CallFuture:
        """Send a prepared call (``Call.of``) now; a future for its result. What ``call_async``
        and ``call`` do once the call is pickled; a fan-out pickles once for every host. A call
        that cannot be sent (``Call.check``) raises SerializationError before any connect."""
        call.check(self.host)
        return self.connection().submit(call.payload, call.module, call.kind, call.timeout)

    def forget(self, future: CallFuture) -> None:
        """Stop waiting for a call of this tunnel's (its caller gave up: killed, cancelled):
        its late result is dropped, a write of it still under way is stopped."""
        conn = self._conn
        if conn is not None:
            conn.forget(future, wait=False)

    def call_async(self, fn, /, *args, **kwargs) -> "Union[CallFuture, hub.ThreadCallFuture]":
        """Start ``fn(*args, **kwargs)`` on the remote; return a future for its result.

        Many calls may be in flight on one tunnel; the remote runs them concurrently. Outside
        the hub that runs the tunnel (a plain thread, under asyncio), the future is a
        ``hub.ThreadCallFuture``, with the same methods, safe from any thread.
        """
        call = Call.of(fn, args, kwargs)  # pickled before anything starts
        there = self._elsewhere()
        if there is not None:
            return hub.ThreadCallFuture(self.host, there.submit(self.run_call, call))
        return self.submit(call)

    # -- files -----------------------------------------------------------------------------

    def put(self, local_path, remote_path: Optional[str] = None, mode: Optional[int] = None, *,
            make_dirs: bool = False, timeout: Optional[float] = None, progress=None,
            if_changed: bool = False, sessions: Optional[int] = None) -> Dict[str, Any]:
        """Copy a file (a path or a file object) or a directory tree to the remote.

        ``remote_path`` None: a new temporary file on the remote (for a directory: its name
        in the remote's home). ``mode``: the permission bits (default: the local file's, 0o644
        for a file object). The file's mtime is kept. ``make_dirs`` creates missing parent
        directories. Returns ``{'local_path', 'remote_path', 'size', 'sha1sum', 'sha256'}``
        (for a directory: ``size``, ``files``, ``dirs``, ``links``). The remote file appears
        whole or not at all. ``progress(nbytes)`` is called as bytes go out.

        ``if_changed``: a remote file that already has the same size and SHA-256 is not sent,
        only given the mode and mtime where they differ; the result then has ``skipped``:
        True or False (for a directory: how many of its files were skipped).

        ``sessions``: over a direct SSH tunnel, a big file goes over that many extra SSH
        sessions to the host, a byte range each, encrypted in OS threads beside the hub
        (``chopsticks.bulk``); the result then says how many (``sessions``). None (default):
        one for a file from 8 MiB, two from 64 MiB; 0: always the tunnel's own stream; at most
        8, and a file under 4 MiB always goes over the stream.
        """
        from chopsticks import transfer
        return self._here(functools.partial(transfer.put, self, local_path, remote_path, mode, make_dirs=make_dirs,
                                            timeout=timeout, progress=progress, if_changed=if_changed,
                                            sessions=sessions))

    def bulk_login(self) -> "Optional[Login]":
        """How extra sessions would log in as this tunnel did, for big puts (``chopsticks.bulk``):
        only a direct SSH tunnel has them."""
        return None

    def fetch(self, remote_path: str, local_path=None, *, make_dirs: bool = False,
              timeout: Optional[float] = None, progress=None, sessions: Optional[int] = None) -> Dict[str, Any]:
        """Copy a remote file (or directory tree) here: to ``local_path`` (a path or a file
        object; None: a new temporary file). The mtime is kept, the mode only as permission bits masked by the umask; the local file appears
        whole or not at all. Returns ``{'remote_path', 'local_path', 'size', 'sha1sum',
        'sha256'}``.

        ``sessions``: over a direct SSH tunnel, a big file (each big file of a tree) comes
        over that many extra SSH sessions, a byte range each, into the one local temporary
        file (``chopsticks.bulk_fetch``); as ``put``'s, and the result then says how many.
        A file object as ``local_path`` always gets the tunnel's stream."""
        from chopsticks import transfer
        return self._here(functools.partial(transfer.fetch, self, remote_path, local_path, make_dirs=make_dirs,
                                            timeout=timeout, progress=progress, sessions=sessions))

    def _here(self, work: Callable[[], Any]) -> Any:
        """``work()`` where this tunnel runs: here, or handed to the hub thread (``chopsticks.hub``)."""
        there = self._elsewhere()
        return work() if there is None else hub.run(there, work)

    def call(self, fn, /, *args, timeout: Optional[float] = None, **kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` on the remote and return its result.

        ``timeout`` (seconds, from when the agent is connected) covers sending the call and
        waiting for its result; it raises ``CallTimeout`` (a ``TimeoutError``) and the tunnel
        stays usable (unless the agent had stopped reading mid-send: then it is closed).
        A remote exception raises ``RemoteException``. To pass a keyword argument named
        ``timeout`` to ``fn``, use ``functools.partial``.
        """
        return self.run_call(Call.of(fn, args, kwargs, timeout=timeout))  # pickled before anything starts

    def run_call(self, call: Call) -> Any:
        """Run a prepared call (``Call.of``) and return its result, as ``call`` does. A caller
        killed while it waits (a greenlet killed, an asyncio task cancelled) forgets the call."""
        there = self._elsewhere()
        if there is not None:
            return hub.run(there, self.run_call, call)
        future = self.submit(call)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                self.forget(future)
            raise


# Where the tunnels of their own modules live (they import this one); the original had them here.
_ELSEWHERE = {"Docker": "chopsticks.containers", "SSHTunnel": "chopsticks.ssh_tunnel", "Tunnel": "chopsticks.ssh_tunnel",
              "SubprocessTunnel": "chopsticks.pipe_tunnels", "Local": "chopsticks.pipe_tunnels",
              "Sudo": "chopsticks.pipe_tunnels"}


def __getattr__(name: str):
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    import importlib
    return getattr(importlib.import_module(module), name)
