"""Tunnels: one connection each to a remote agent, with ``call``, ``put`` and ``fetch``. API layer.

A tunnel connects lazily on first use, can be closed and used again (it reconnects), and is
a context manager. Subclasses only say how to start a pipe whose other end is the remote
``python`` (``_open_pipe``; for a local command, ``SubprocessTunnel.cmd_args``); everything
else is shared. Tunnels are driven by gevent: use them from greenlets (or plain code in the
main thread), not from several OS threads. A connected tunnel belongs to the thread whose hub
runs it; a use from another thread raises ``WrongThread`` at once (it would wait forever).
"""

import contextlib
import os
import shlex
import signal
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import gevent
import gevent.lock
from gevent.hub import _get_hub, get_hub  # _get_hub: the calling thread's hub, or None (makes none)

from chopsticks import bootstrap
from chopsticks.bootstrap import EXIT_OLD_PYTHON
from chopsticks.connection import Connection, Explained
from chopsticks.errors import (CallTimeout, ChopsticksError, ConnectError, ConnectTimeout, PythonNotFound,
                               WrongThread)
# the original's homes of these: code written for it imports them from here
from chopsticks.errors import DepthLimitExceeded, RemoteException  # noqa: F401
from chopsticks.results import ErrorResult  # noqa: F401
from chopsticks.future import CallFuture
from chopsticks.jobs import Call
from chopsticks.modules import ImportService, shared_server
from chopsticks.nesting import Nested
# the defaults stay importable from here (tests and bench/ do)
from chopsticks.options import DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESULT, TunnelOptions, replace  # noqa: F401
from chopsticks.transports import Pipe
from chopsticks.transports.libssh import Login
from chopsticks.transports.libssh2 import Deadline
from chopsticks.transports.process import ProcessPipe
from chopsticks.transports.relayed import RelayPipe
from chopsticks.transports.ssh import HandshakeSlots, SSHLink, default_slots
from chopsticks.transports.ssh_jump import default_bastions
from chopsticks.transports.ssh_pipe import SSHPipe
from chopsticks.transports.ssh_options import POLICIES, SSHOptions, resolve

# Exit statuses of a shell that could not run the interpreter.
NOT_FOUND_STATUSES = (126, 127)


def _system_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"


def sudo_argv(user: str, argv: List[str]) -> List[str]:
    """``argv`` run as ``user`` by sudo, which must not ask for a password."""
    return ["sudo", "-n", "-u", user, "--"] + argv


def _weakly(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of a tunnel, called while the tunnel lives (None after): what a connection
    keeps of its tunnel, so that a tunnel dropped without ``close()`` can be collected."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        bound = ref()
        return None if bound is None else bound(*args)
    return call


def _close_dropped(conn: Connection, owner: "weakref.ref[Any]") -> None:
    """The finalizer of a connected tunnel deleted or collected without ``close()``: its agent
    goes (and its process or container with it), as the original's ``__del__`` did.

    It runs wherever the last reference went, perhaps in another thread, so it never blocks
    and never raises, and it holds the connection only, never the tunnel. In the owner's
    thread, the close runs later in a greenlet of that thread's hub; in another thread, whose
    hub it must not touch, it only signals the local process (the podman or sudo in front of
    the agent passes the signal on), and the connection ends in its own hub as if the agent
    had died. At interpreter exit nothing is needed: the agents see their stdin end."""
    try:
        if conn.closed:
            return
        hub = owner()
        if hub is not None and _get_hub() is hub:  # the owner's thread (not one that reused its ident)
            gevent.spawn(conn.close)
        elif isinstance(conn.pipe, ProcessPipe) and conn.pipe.proc.returncode is None:  # not reaped: its pid
            os.kill(conn.pipe.proc.pid, signal.SIGTERM)
        # else an SSH channel dropped in another thread: it ends with its session, at the
        # owner's next close of that login or at exit (nothing thread-safe can end it here)
    except Exception:  # noqa: S110 (a finalizer must not raise; the process is gone or going)
        pass


def explain_sudo(stderr: List[str]) -> Optional[Explained]:
    """Why an agent started through ``sudo -n`` ended before it started, if sudo said so."""
    if any("sudo:" in line and "password" in line for line in stderr):
        return ConnectError, ("sudo asks for a password on this host; chopsticks runs sudo non-interactively "
                              "(sudo -n): allow the command with NOPASSWD")
    return None


class BaseTunnel:
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
    #: How deep this tunnel is nested: 1 for the controller's own, one more for each
    #: level of remote code that opened it (``chopsticks.nesting``).
    depth = 1

    def __init__(self, host: str, *, python: Optional[str] = None, connect_timeout: Optional[float] = None,
                 max_result: Optional[int] = None, modules: Optional[ImportService] = None,
                 serve: Optional[Iterable[str]] = None, tunnel_options: Optional[TunnelOptions] = None,
                 via: "Optional[BaseTunnel]" = None):
        if not isinstance(host, str) or not host:
            raise ValueError("a tunnel needs a non-empty name, got %r" % (host,))
        if via is not None and not isinstance(via, BaseTunnel):
            raise TypeError("via= takes a tunnel (the host that starts this one's agent), got %r" % (via,))
        self.tunnel_options = options = (tunnel_options or TunnelOptions()).given(
            python=python, connect_timeout=connect_timeout, max_result=max_result, serve=serve)
        if options.sudo and not self.takes_sudo:
            raise TypeError("%s has no sudo option (an SSH tunnel's); a local agent as another user is "
                            "Sudo(user)" % type(self).__name__)
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
        self.via.connect(None if until is None else max(0.0, until - time.monotonic()))
        via = self.via._conn
        if via is None:
            raise ConnectError("[%s] the tunnel through %s was closed meanwhile" % (self.host, self.via.host))
        started = time.monotonic()  # what the command takes to learn counts as the start's
        argv = self._relayed_argv(via, started + timeout if until is None else min(started + timeout, until))
        return RelayPipe(via, argv), started

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

    def _check_thread(self) -> None:
        """Refuse a use from an OS thread other than the one whose hub runs the connection:
        nothing would ever wake it there (or gevent would fail deep inside)."""
        owner = self._thread
        if self._conn is not None and owner is not None and owner.ident != threading.get_ident():
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
        self._check_thread()
        if self.connected:
            return self
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
        return self

    def _watch_for_drop(self, conn: Connection) -> None:
        """Close ``conn``'s agent if this tunnel is deleted or collected unclosed (``_close_dropped``)."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _close_dropped, conn, weakref.ref(get_hub()))
        self._finalizer.atexit = False  # at exit the agents see their stdin end

    def _start(self, until: Optional[float], timeout: Optional[float]) -> Connection:
        """A started agent's connection, by ``until`` if given (``timeout`` from the
        caller's now), and within ``connect_timeout``."""
        options = self.tunnel_options
        bundle = bootstrap.bundle_for(options.max_result)
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
                          explain=_weakly(self._explain_failed_start), nested=Nested(self))
        remaining, stated = options.connect_timeout - (time.monotonic() - started), options.connect_timeout
        if until is not None and until - time.monotonic() < remaining:
            remaining, stated = until - time.monotonic(), timeout or 0.0
        try:
            conn.handshake(bundle.stdin_bytes(), max(0.001, remaining), stated)
        except BaseException:
            # also when cancelled from outside (a group's deadline, the caller's own
            # timeout, Ctrl-C): what was started must not outlive the attempt
            conn.close(kill=True)
            raise
        return conn

    def close(self) -> None:
        """Stop the agent and release its process and pipes. The tunnel can be used again."""
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
        self.connect()
        assert self._conn is not None
        return self._conn.submit(call.payload, call.module, call.kind, call.timeout)

    def call_async(self, fn, /, *args, **kwargs) -> CallFuture:
        """Start ``fn(*args, **kwargs)`` on the remote; return a future for its result.

        Many calls may be in flight on one tunnel; the remote runs them concurrently.
        """
        return self.submit(Call.of(fn, args, kwargs))  # pickled before anything starts

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
        return transfer.put(self, local_path, remote_path, mode, make_dirs=make_dirs, timeout=timeout,
                            progress=progress, if_changed=if_changed, sessions=sessions)

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
        return transfer.fetch(self, remote_path, local_path, make_dirs=make_dirs, timeout=timeout,
                              progress=progress, sessions=sessions)

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
        """Run a prepared call (``Call.of``) and return its result, as ``call`` does."""
        return self.submit(call).result()


class SubprocessTunnel(BaseTunnel):
    """A tunnel whose agent is reached through a local command's stdin and stdout.

    The base of ``Local``, ``Sudo`` and ``Docker``, and of your own pipe tunnels: override
    ``cmd_args()`` to wrap the remote ``python`` command in whatever reaches the other side
    (``kubectl exec -i``, ``lxc exec``, ``chroot`` ...). The command must pass stdin and stdout
    through byte for byte and must not write to stdout itself; what it writes to stderr is
    shown as the host's output. Set the class attribute ``python3`` (as in the original
    chopsticks) or pass ``python=`` to choose the interpreter.
    """

    def __init__(self, host: Optional[str] = None, **options):
        if host is None:  # the original's subclasses set self.host, then call __init__()
            host = getattr(self, "host", "")
        super().__init__(host, **options)

    @property
    def PYTHON_ARGS(self) -> List[str]:  # noqa: N802 (the original's name)
        """The interpreter's arguments that start the agent (the original's attribute)."""
        return bootstrap.python_argv(self.python)[1:]

    def cmd_args(self) -> List[str]:
        """The command that starts the agent: by default the remote ``python`` itself."""
        return bootstrap.python_argv(self.python)

    def _relayed_argv(self, via: Connection, until: float) -> List[str]:
        return self.cmd_args()

    def _after_kill(self) -> Optional[Callable[[], None]]:
        """What cleans up after the command had to be killed (a container tunnel removes its
        container), or None: a callable of plain values, never holding the tunnel, since the
        pipe outlives a tunnel dropped without ``close()``."""
        return None

    def _open_pipe(self, timeout: float, until: Optional[float] = None) -> Tuple[Pipe, float]:
        # nothing to wait for: a spawn is bounded by the system, then the handshake by until
        if not get_hub().loop.default:
            raise WrongThread("[%s] a pipe tunnel starts its process from the main thread's gevent hub "
                              "(gevent watches child processes only there), not from thread %r: use "
                              "it from the main thread" % (self.host, threading.current_thread().name))
        argv = self.cmd_args()
        try:
            return ProcessPipe(argv, after_kill=self._after_kill()), time.monotonic()
        except FileNotFoundError:
            if argv[0] == self.python:
                raise  # connect reports the missing interpreter
            raise ConnectError("[%s] cannot start %s: it is not installed (not found on PATH)"
                               % (self.host, argv[0])) from None


class Local(SubprocessTunnel):
    """A tunnel to an agent in a local subprocess of the system ``python3``.

    ``Local()`` or ``Local('name', python='/usr/bin/python3.11')``.
    """

    def __init__(self, name: str = "localhost", **options):
        super().__init__(name, **options)


class Sudo(SubprocessTunnel):
    """A tunnel to a local agent run as another user through ``sudo -n`` (never a password
    prompt: allow the interpreter with NOPASSWD in sudoers).

    ``Sudo()`` (root, named ``root@localhost``), ``Sudo('postgres', name='pg')``.
    """

    def __init__(self, user: str = "root", name: Optional[str] = None, **options):
        if not isinstance(user, str) or not user or user.startswith("-"):
            raise ValueError("Sudo needs a user name, got %r" % (user,))
        self.user = user
        super().__init__(name or "%s@localhost" % user, **options)

    def cmd_args(self) -> List[str]:
        return sudo_argv(self.user, super().cmd_args())

    def _explain_failed_start(self, status: Optional[int], stderr: List[str]) -> Optional[Explained]:
        return explain_sudo(stderr) or super()._explain_failed_start(status, stderr)


class SSHTunnel(BaseTunnel):
    """A tunnel to an agent on a host reached over SSH (libssh2, in-process, one socket).

    ``SSHTunnel('web-1')``, ``SSHTunnel('deploy@web-1:2222', key='~/.ssh/deploy')``,
    ``SSHTunnel('db-1', jump='bastion', sudo=True)``. SSH options (``user``, ``port``, ``key``,
    ``passphrase``, ``password``, ``agent``, ``jump``, ``known_hosts``, ``host_key_policy``,
    ``ssh_config``) may be given one by one or as one shared ``options=SSHOptions(...)``;
    ``~/.ssh/config`` fills in what neither says. Tunnels through the same jump host (the same
    resolved hops) share one login to it, which closes with the last of them. ``sudo=True``
    (or a user name) runs the agent under ``sudo -n``. ``python`` is the remote interpreter
    (default ``python3``). The
    tunnel options (``python``, ``sudo``, ``connect_timeout``, ``max_result``, ``serve``) may
    likewise come as one shared ``tunnel_options=TunnelOptions(...)``, as a ``Group`` gives them.
    """

    python3 = "python3"
    takes_sudo = True

    def __init__(self, host: str, *, options: Optional[SSHOptions] = None,
                 tunnel_options: Optional[TunnelOptions] = None, python: Optional[str] = None,
                 sudo: Union[bool, str, None] = None, connect_timeout: Optional[float] = None,
                 max_result: Optional[int] = None, modules: Optional[ImportService] = None,
                 serve: Optional[Iterable[str]] = None, handshake_slots: Optional[HandshakeSlots] = None,
                 via: Optional[BaseTunnel] = None, **ssh_options):
        super().__init__(host, python=python, connect_timeout=connect_timeout, max_result=max_result,
                         modules=modules, serve=serve,
                         tunnel_options=(tunnel_options or TunnelOptions()).given(sudo=sudo), via=via)
        self.options = options = replace(options or SSHOptions(), "SSHTunnel", ssh_options)
        # through another tunnel, that host's own ssh client reads its own configuration
        self.destination = resolve(host, options) if via is None else None
        if via is not None:
            ssh_client_argv(host, options)  # options it cannot pass on fail here, not at connect
        self._slots = handshake_slots

    @property
    def sudo(self) -> Optional[str]:
        """Whom the agent runs as through ``sudo -n``, or None."""
        return self.tunnel_options.sudo_user

    def _command(self) -> str:
        return self._shell(bootstrap.python_argv(self.python))

    def _shell(self, words: List[str]) -> str:
        """``words`` as the remote's shell line, under the tunnel's sudo."""
        if self.sudo:
            words = sudo_argv(self.sudo, words)
        return " ".join(shlex.quote(word) for word in words)

    def python_command(self, code: str, args: List[str]) -> str:
        """The shell line that runs ``code`` under the agent's interpreter, as the agent's user."""
        return self._shell([self.python, "-S", "-c", code] + args)

    def _relayed_argv(self, via: Connection, until: float) -> List[str]:
        return ssh_client_argv(self.name, self.options) + [self._command()]

    def bulk_login(self) -> Optional[Login]:
        """How an extra session logs in as this tunnel did (``chopsticks.bulk``), or None."""
        pipe = self._conn.pipe if self._conn is not None else None
        return Login.of(pipe.link) if isinstance(pipe, SSHPipe) else None

    def _explain_failed_start(self, status: Optional[int], stderr: List[str]) -> Optional[Explained]:
        return (self.sudo and explain_sudo(stderr)) or super()._explain_failed_start(status, stderr)

    def _open_pipe(self, timeout: float, until: Optional[float] = None) -> Tuple[Pipe, float]:
        # Wait for a handshake slot first: the connect timeout starts once it is ours, so a
        # thousand tunnels queued behind the bound do not time out while they wait (until,
        # a caller's deadline, counts the wait too).
        slots = self._slots or default_slots()
        with contextlib.ExitStack() as holding:
            waited = None if until is None else max(0.0, until - time.monotonic())
            with gevent.Timeout(waited, ConnectTimeout("[%s] no SSH handshake slot came free in time (at most %d "
                                                       "handshakes run at once)" % (self.host, slots.limit))):
                holding.enter_context(slots)
            started = time.monotonic()
            if until is not None:
                timeout = max(0.001, min(timeout, until - started))
            deadline = Deadline(timeout, "connecting over SSH")
            assert self.destination is not None  # a tunnel with via= has none, and is not opened here
            link = SSHLink.open(self.destination, deadline, default_bastions())
            try:
                return link.open_channel(self._command(), deadline), started
            except BaseException:
                link.close()
                raise


# OpenSSH's StrictHostKeyChecking for each host key policy.
_STRICT = {"strict": "yes", "accept-new": "accept-new", "off": "no"}


def ssh_client_argv(host: str, options: SSHOptions) -> List[str]:
    """The OpenSSH client command (without the remote command) that reaches ``host`` from
    an intermediate host (``SSHTunnel(host, via=...)``): never a prompt (``BatchMode``), and
    the options that make sense there, as that host's paths; the rest is refused."""
    refused = [name for name in ("password", "passphrase") if getattr(options, name) is not None]
    if refused:
        raise ValueError("SSHTunnel(%r, via=...): %s cannot be passed to the intermediate host's ssh client "
                         "(it runs with BatchMode=yes); use a key or an agent there" % (host, " and ".join(refused)))
    argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % max(1, round(options.connect_timeout))]
    if options.user:
        argv += ["-l", options.user]
    if options.port:
        argv += ["-p", str(options.port)]
    for key in _as_list(options.key):
        argv += ["-i", key]
    for known_hosts in _as_list(options.known_hosts):
        argv += ["-o", "UserKnownHostsFile=" + known_hosts]
    if options.host_key_policy:
        argv += ["-o", "StrictHostKeyChecking=" + _STRICT[POLICIES[options.host_key_policy]]]
    if options.jump:
        argv += ["-J", ",".join(_as_list(options.jump))]
    if options.ssh_config is not None:
        argv += ["-F", options.ssh_config or "none"]
    if options.keepalive_interval is not None:
        argv += ["-o", "ServerAliveInterval=%d" % options.keepalive_interval]
    if options.keepalive_count_max is not None:
        argv += ["-o", "ServerAliveCountMax=%d" % options.keepalive_count_max]
    if host.startswith("-"):
        raise ValueError("SSHTunnel(%r): a host name cannot start with '-'" % host)
    return argv + ["--", host]


def _as_list(value: Union[None, str, Iterable[str]]) -> List[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


#: The default tunnel type, as in the original chopsticks.
Tunnel = SSHTunnel



def __getattr__(name: str):
    # Docker lives in its own module (it imports this one); the original had it here.
    if name == "Docker":
        from chopsticks.containers import Docker
        return Docker
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
