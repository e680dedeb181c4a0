"""Relayed pipes: this agent starts a command for the controller and carries its bytes. Remote-safe.

A tunnel with ``via=`` (``Docker('app', via=tun)``, ``SSHTunnel('db-7', via=tun)``) reaches
its agent through this one: the controller calls ``run`` here with the command that starts
that agent, and three file streams of this tunnel carry the command's stdin, stdout and
stderr. The controller drives the far agent itself (calls, imports, files), over bytes this
agent only copies, so nothing here knows the protocol the far agent speaks. The streams'
credit (``wire.window``) bounds what is in flight each way, so a slow far agent or a slow
controller holds back only its own pipe. The command runs in a session of its own,
registered with the agent, so it ends when this agent does.
"""

import os
import subprocess

from chopsticks.agent import main, threads

# Bytes per read of the command's stdout and stderr (one STREAM frame's worth at most).
READ_SIZE = 65536
# How long the command's process group gets after SIGTERM, when the controller kills it.
KILL_GRACE = 1.0

ENGINE_VARIABLE = "CHOPSTICKS_CONTAINER_ENGINE"
# A shell's exit statuses for a command it could not find, or could not run.
NOT_FOUND, NOT_EXECUTABLE = 127, 126

RUNNING = {}  # stdin stream id -> the command's Popen, while ``run`` runs it


def run(argv, stdin_sid, stdout_sid, stderr_sid):
    """Start ``argv``, copy the streams both ways until its stdout and stderr end, and return
    its exit status (negative: the signal that killed it). The controller's END of the stdin
    stream closes the command's stdin; ``kill`` ends its process group."""
    agent = main.AGENT
    stdin, stdout, stderr = (agent.open_stream(sid) for sid in (stdin_sid, stdout_sid, stderr_sid))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, bufsize=0)
    except OSError as exc:  # as a shell says it: on stderr, with its exit status
        stderr.send(("chopsticks: cannot run %s: %s\n" % (argv[0], exc.strerror or exc)).encode())
        for stream in (stdin, stdout, stderr):
            stream.close()
        return NOT_FOUND if isinstance(exc, FileNotFoundError) else NOT_EXECUTABLE
    agent.children.add(proc.pid)
    RUNNING[stdin_sid] = proc
    try:
        readers = [_Copy(proc.stdout, stdout), _Copy(proc.stderr, stderr)]
        threads.start(lambda: _feed(proc, stdin))
        for reader in readers:
            reader.done.wait()
        return proc.wait()
    finally:
        RUNNING.pop(stdin_sid, None)
        agent.children.discard(proc.pid)
        for stream in (stdin, stdout, stderr):
            stream.close()  # the feeder leaves at once if still waiting


class _Copy(object):
    """Copies one of the command's outputs to an outgoing stream, in a thread of its own."""

    def __init__(self, source, stream):
        self.source = source
        self.stream = stream
        self.done = threads.Event()
        threads.start(self.copy)

    def copy(self):
        fd = self.source.fileno()
        try:
            while True:
                data = os.read(fd, READ_SIZE)
                if not data or not self.stream.send(data):
                    break  # its end, or the controller stopped reading: the rest is dropped
        except OSError:
            pass
        finally:
            self.source.close()
            self.done.set()


def _feed(proc, stdin):
    """Write the stdin stream's chunks to the command until the controller's END."""
    fd = proc.stdin.fileno()
    broken = False
    for chunk in stdin.chunks_until_end():
        view = memoryview(chunk)
        while view and not broken:
            try:
                view = view[os.write(fd, view):]
            except OSError:  # it stopped reading (exited): what follows is consumed unwritten
                broken = True
    proc.stdin.close()


def kill(stdin_sid):
    """End the command of the relay whose stdin is stream ``stdin_sid``, if it still runs."""
    proc = RUNNING.get(stdin_sid)
    if proc is not None:
        _end_group(proc)


def _end_group(proc):
    """SIGTERM the command's process group, SIGKILL it if still there after KILL_GRACE."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(KILL_GRACE)
            return
        except subprocess.TimeoutExpired:
            pass


def container_engine(daemon_answers=None):
    """This host's container engine: ``$CHOPSTICKS_CONTAINER_ENGINE``, else ``docker`` if
    installed and its daemon answers, else ``podman`` if installed, else ``docker`` (whose
    start then says what is missing). A ``docker`` client without its daemon next to podman
    means podman; ``daemon_answers(path)`` (by default ``docker version``, 5 s at most) is
    asked only when podman is there too."""
    import shutil
    chosen = os.environ.get(ENGINE_VARIABLE)
    if chosen:
        return chosen
    docker, podman = shutil.which("docker"), shutil.which("podman")
    if docker is not None and (podman is None or (daemon_answers or _daemon_answers)(docker)):
        return "docker"
    return "podman" if podman is not None else "docker"


def _daemon_answers(docker):
    try:
        return subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
