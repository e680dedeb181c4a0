"""A child process as a byte pipe, cooperative under gevent. Transport layer.

Used by every tunnel that runs a local command whose stdin and stdout reach the agent
(``SubprocessTunnel``: ``Local``, ``Sudo``, ``Docker`` and your own). The child gets its own session, so
a Ctrl-C at the controller's terminal does not reach it and closing can kill its whole
process group.

gevent watches child processes only from the main thread's loop (libev's default loop). In
any other thread's hub (the hub thread of ``chopsticks.hub``) the child is started by the
standard library and its exit is waited for on a pidfd (polled where there is none), never
blocking that hub. One limit there: when the main thread also runs a gevent hub that watches
children, that loop reaps every child of the process, whichever thread started it, and such
a child's exit status is then lost (read as 0).
"""

import errno
import os
import signal
import subprocess
from typing import Any, Callable, List, Mapping, Optional

import gevent
import gevent.subprocess
from gevent.hub import _get_hub, get_hub  # _get_hub: the calling thread's hub, or None (makes none)
from greenlet import getcurrent

# Bytes per read: kept under glibc's mmap threshold, so a read does not map a fresh buffer.
READ_SIZE = 65536
# How long a child may take to exit after its stdin closes before it is killed.
EXIT_GRACE = 2.0
_READ = 1
_WRITE = 2


def kill_session(pid: int) -> None:
    """SIGKILL a child started in a session of its own, and whatever it started there."""
    for kill in (os.killpg, os.kill):  # the child itself too: it may not have called setsid yet
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Child(gevent.subprocess.Popen):
    """A ``Popen`` whose start does not leave the child behind when it is interrupted (a
    deadline, a kill) while gevent waits for the child's exec: the child is killed, reaped,
    and ``after_kill`` runs, before the interruption goes on."""

    def __init__(self, argv: List[str], after_kill: Optional[Callable[[], None]], **options):
        try:
            super().__init__(argv, **options)
        except BaseException:
            if getattr(self, "pid", None) is not None and self.returncode is None:  # forked, not reaped
                kill_session(self.pid)
                try:
                    self.wait(timeout=EXIT_GRACE)
                except (subprocess.TimeoutExpired, gevent.Timeout):
                    pass
                if after_kill is not None:
                    after_kill()
            raise


def start_child(argv: List[str], after_kill: Optional[Callable[[], None]], **options) -> Any:
    """The child, started by gevent in the main thread's loop, else by the standard library
    (a fork and exec: it returns once the child runs, or raises why it cannot)."""
    if get_hub().loop.default:
        return Child(argv, after_kill, **options)
    return subprocess.Popen(argv, **options)


def wait_child(proc: subprocess.Popen, timeout: Optional[float]) -> Optional[int]:
    """``proc``'s exit status within ``timeout`` seconds (None: still running): gevent's own
    wait for a child it started, else, in a hub without child watchers, on a pidfd, readable
    once it exits, or by polling."""
    if isinstance(proc, gevent.subprocess.Popen):
        try:
            return proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, gevent.Timeout):
            return None
    if proc.poll() is not None or timeout == 0:
        return proc.returncode
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfds here (an old kernel, not Linux), or already reaped
        pidfd = None
    with gevent.Timeout(timeout, False):
        if pidfd is None:
            pause = 0.001
            while proc.poll() is None:
                gevent.sleep(pause)
                pause = min(pause * 2, 0.05)
        else:
            watcher = get_hub().loop.io(pidfd, _READ)
            try:
                get_hub().wait(watcher)
            finally:
                watcher.close()
                os.close(pidfd)
    return proc.poll()


def run_command(argv: List[str], timeout: float, text: bool = False) -> "subprocess.CompletedProcess[Any]":
    """``argv`` run to its end, stdin empty and output captured (``subprocess.run``), without
    blocking a hub: gevent's in the main thread's loop, else the standard library's in a
    thread of the hub's pool (plainly in a thread without a hub, which has nothing to block)."""
    options: Any = dict(stdin=subprocess.DEVNULL, capture_output=True, text=text, timeout=timeout)
    hub = _get_hub()
    if hub is None:
        return subprocess.run(argv, **options)
    if hub.loop.default:
        return gevent.subprocess.run(argv, **options)
    return hub.threadpool.apply(subprocess.run, (argv,), options)


class ProcessPipe:
    """stdin/stdout/stderr of a child process, read and written without blocking the hub.

    ``after_kill`` is called (from ``close``, or from an interrupted start) once the child
    had to be killed: a container tunnel removes the container its killed client may have left."""

    def __init__(self, argv: List[str], env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                 after_kill: Optional[Callable[[], None]] = None):
        self.proc = start_child(argv, after_kill, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, bufsize=0, start_new_session=True, env=env, cwd=cwd)
        self.after_kill = after_kill
        self.end_reason: Optional[str] = None  # the exit status says why a process ended
        self._killed = False
        loop = get_hub().loop
        self._writer = None  # the greenlet waiting to write, if any
        self._fds = {}
        self._watchers = {}
        for role, stream, mode in (("in", self.proc.stdin, _WRITE), ("out", self.proc.stdout, _READ),
                                   ("err", self.proc.stderr, _READ)):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._fds[role] = fd
            self._watchers[role] = loop.io(fd, mode)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid

    def start_reading(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        """Call ``on_stdout(data)`` and ``on_stderr(data)`` from the hub for each chunk of
        stdout and of stderr; ``b""`` at each one's end."""
        self._watch("out", on_stdout)
        self._watch("err", on_stderr)

    def _watch(self, role: str, callback: Callable[[bytes], None]) -> None:
        fd, watcher = self._fds[role], self._watchers[role]

        def on_readable():
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                watcher.stop()
            # No second read to drain the pipe: the watcher is level-triggered, so what is
            # left calls us again, and a trivial call saves a syscall and an exception.
            callback(data)

        watcher.start(on_readable)

    def stop_reading(self) -> None:
        watcher = self._watchers.get("out")
        if watcher is not None:
            watcher.stop()

    def write(self, data) -> None:
        view = self.write_now(data)
        while view:
            watcher = self._watchers.get("in")
            if watcher is None:
                raise BrokenPipeError(errno.EPIPE, "the agent's stdin is closed")
            self._writer = getcurrent()
            try:
                get_hub().wait(watcher)
            finally:
                self._writer = None
            view = self.write_now(view)

    def write_now(self, data) -> memoryview:
        view = memoryview(data)
        if "in" not in self._watchers:
            raise BrokenPipeError(errno.EPIPE, "the agent's stdin is closed")
        try:
            return view[os.write(self._fds["in"], view):] if view else view
        except BlockingIOError:
            return view

    def close_stdin(self) -> None:
        """Send end-of-file to the agent, which then exits. A blocked writer gets EPIPE."""
        watcher = self._watchers.pop("in", None)
        if watcher is not None:
            if self._writer is not None:  # wake it before its watcher goes away
                get_hub().loop.run_callback(self._writer.throw, BrokenPipeError(errno.EPIPE, "stdin closed"))
            watcher.close()
            self.proc.stdin.close()

    def exit_status(self, timeout: Optional[float] = None) -> Optional[int]:
        """The child's exit status, waiting up to ``timeout`` seconds; None if still running."""
        return wait_child(self.proc, timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self._killed = True
            kill_session(self.proc.pid)

    def close(self) -> None:
        """Release everything: stdin, the child (killed if it outlives EXIT_GRACE), the fds.

        Stops the stderr callbacks too: no watcher may outlive its fd.
        """
        self.close_stdin()
        if self.exit_status(EXIT_GRACE) is None:
            self.kill()
            self.exit_status(EXIT_GRACE)
        for role in ("out", "err"):
            watcher = self._watchers.pop(role, None)
            if watcher is not None:
                watcher.close()
        self.proc.stdout.close()
        self.proc.stderr.close()
        if self._killed and self.after_kill is not None:
            self.after_kill()
