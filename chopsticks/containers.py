"""Tunnels into containers: ``Docker``, which drives podman with the same code. API layer.

A container tunnel is a pipe tunnel whose command is the engine's ``run -i`` (a fresh
container, removed when the tunnel closes) or ``exec -i`` (a running one). Images are never
pulled: a missing image is an error, not a download in the middle of a fan-out.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from typing import Callable, List, Optional, Sequence, Tuple

from chopsticks.agent import relay as remote_relay
from chopsticks.errors import CallTimeout, ConnectTimeout, ContainerError, PythonNotFound
from chopsticks import logs
from chopsticks.connection import Connection, Explained
from chopsticks.jobs import Call
from chopsticks.transports import Pipe
from chopsticks.transports.process import run_command
from chopsticks.pipe_tunnels import SubprocessTunnel

# What engines accept as a container name.
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
ENGINE_VARIABLE = remote_relay.ENGINE_VARIABLE
# The original's default: the official image of the controller's own Python version.
DEFAULT_IMAGE = "python:%d.%d" % sys.version_info[:2]


# How long a ``docker`` client may take to say whether its daemon answers. Without one it
# says so in ~50 ms here; with one, ~30 ms. Generous for a loaded machine, once per process.
PROBE_TIMEOUT = 5.0


@functools.lru_cache(maxsize=None)
def _daemon_answers(docker: str) -> bool:
    """Whether the ``docker`` client at this path reaches a daemon (asked once per process:
    ``docker version`` fails without one; a ``docker`` that is podman needs none)."""
    try:
        return run_command([docker, "version", "--format", "{{.Server.Version}}"], PROBE_TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def default_engine() -> str:
    """This machine's engine (``agent.relay.container_engine``); docker is asked whether its
    daemon answers once per process."""
    return remote_relay.container_engine(_daemon_answers)


def remove_labelled(engine: str, label: str, host: str) -> None:
    """Remove the containers ``engine`` knows with ``label`` (one tunnel's start), at once."""
    def run(*argv: str) -> str:
        return run_command([engine, *argv], 30, text=True).stdout
    try:
        ids = run("ps", "--all", "--quiet", "--filter", "label=" + label).split()
        if ids:
            # podman would first wait 10 s for a polite stop; docker's --force kills at once
            wait = ["--time", "0"] if os.path.basename(engine) == "podman" else []
            run("rm", "--force", *wait, *ids)
    except (OSError, subprocess.TimeoutExpired) as exc:  # the tunnel is closed either way
        logs.event("container_remove_failed", host=host, error=str(exc))


class Docker(SubprocessTunnel):
    """A tunnel to an agent in a container.

    ``Docker('worker-1', image='python:3.12')`` starts a fresh container named ``worker-1``
    (``run -i --rm``). It ends when the tunnel closes, and also when the controller dies,
    since the agent exits at the end of its stdin. ``rm=False`` keeps the stopped container
    (so its name stays taken, and the tunnel cannot start another under it).
    ``Docker('app', container='app-7f3c')`` runs the agent inside a running container
    (``exec -i``). ``engine`` is the engine's command (default: ``$CHOPSTICKS_CONTAINER_ENGINE``,
    else ``docker`` if its daemon answers, else ``podman``); ``engine_args`` are extra options to ``run`` or
    ``exec`` (``['--user', 'app']``, ``['--network', 'none']``). ``python`` is the
    interpreter in the container (default ``python3``).
    """

    python3 = "python3"

    def __init__(self, name: str, image: Optional[str] = None, rm: bool = True, *,
                 container: Optional[str] = None, engine: Optional[str] = None,
                 engine_args: Sequence[str] = (), **options):
        super().__init__(name, **options)
        if container is not None and image is not None:
            raise ValueError("Docker(%r): give image= (a new container) or container= (a running "
                             "one), not both" % name)
        if not CONTAINER_NAME.match(container if container is not None else name):
            raise ValueError("Docker(%r): %r is not a container name (letters, digits, '_', '.', '-'; "
                             "starting with a letter or digit)" % (name, container or name))
        if image is not None and (not isinstance(image, str) or not image.strip() or image.startswith("-")):
            raise ValueError("Docker(%r): %r is not an image name (an engine would read one starting "
                             "with '-' as an option)" % (name, image))
        if isinstance(engine_args, str) or not all(isinstance(a, str) for a in engine_args):
            raise TypeError("Docker(%r): engine_args must be a list of strings" % name)
        self.container = container
        self.image = None if container is not None else (image or DEFAULT_IMAGE)
        self.rm = rm
        # through another tunnel, that host's engine, asked there at the start
        self.engine = engine or (default_engine() if self.via is None else "")
        self.engine_args = list(engine_args)
        self._label = ""  # marks the container of the current start, for removal

    def cmd_args(self) -> List[str]:
        python = super().cmd_args()
        if self.container is not None:
            return [self.engine, "exec", "-i"] + self.engine_args + [self.container] + python
        keep = ["--rm"] if self.rm else []
        label = ["--label", self._label] if self._label else []
        return ([self.engine, "run", "-i", "--pull=never", "--name", self.name] + label + keep
                + self.engine_args + [str(self.image)] + python)

    def _relayed_argv(self, via: Connection, until: float) -> List[str]:
        if not self.engine:
            call = Call.of(remote_relay.container_engine)
            asked = via.submit(call.payload, call.module, call.kind)
            try:
                engine = asked.result(max(0.0, until - time.monotonic()))
            except CallTimeout:
                via.forget(asked)
                raise ConnectTimeout("[%s] %s did not name its container engine in time"
                                     % (self.host, via.name)) from None
            if not isinstance(engine, str) or not engine:
                raise ContainerError("[%s] %s named no container engine" % (self.host, via.name))
            self.engine = engine
        return self.cmd_args()

    def _open_pipe(self, timeout: float, until: Optional[float] = None) -> Tuple[Pipe, float]:
        if shutil.which(self.engine) is None:
            raise ContainerError("[%s] no container engine: %r is not installed (not found on PATH); "
                                 "install Docker or podman, or choose one with engine= or $%s"
                                 % (self.host, self.engine, ENGINE_VARIABLE))
        self._label = "chopsticks.start=%s" % uuid.uuid4().hex
        return super()._open_pipe(timeout, until)

    def _after_kill(self) -> Optional[Callable[[], None]]:
        """Remove the container of this start, which a killed client may have left (found by
        its label: the name may belong to someone else's container). ``rm=False`` keeps it,
        and ``exec`` leaves a running container alone."""
        if self.container is not None or not self.rm:
            return None
        return functools.partial(remove_labelled, self.engine, self._label, self.host)

    def _explain_failed_start(self, status: Optional[int], stderr: List[str]) -> Optional[Explained]:
        lines = [line.lower() for line in stderr]

        def said(*words: str) -> bool:  # one line of stderr says all of these
            return any(all(word in line for word in words) for line in lines)

        engine = os.path.basename(self.engine)
        if said("chopsticks: cannot run", self.engine.lower()):
            where = self.via.host if self.via is not None else "this machine"
            return ContainerError, "no container engine: %r cannot run on %s" % (self.engine, where)
        if said("cannot connect to the docker daemon") or said("docker daemon running"):
            return ContainerError, ("%s cannot reach its daemon: is it running? (on a machine with "
                                    "podman: engine='podman')" % engine)
        if self.container is not None:
            if said("no such container") or said("no container with name or id"):
                return ContainerError, "there is no container named %r" % self.container
            if said("state improper") or said("is not running"):
                return ContainerError, "container %r is not running" % self.container
        else:
            if any(said(*words) for words in (("image not known",), ("no such image",), ("unable to find image",),
                                              ("pull access denied",), ("manifest unknown",))):
                return ContainerError, ("image %r is not on this machine, and chopsticks never pulls: "
                                        "run `%s pull %s` first" % (self.image, engine, self.image))
            if said("container name", self.name.lower(), "already in use"):
                return ContainerError, ("the container name %r is already taken: remove that container "
                                        "(`%s rm -f %s`) or name this tunnel differently"
                                        % (self.name, engine, self.name))
        where = "container %r" % self.container if self.container is not None else "image %r" % self.image
        if status in (126, 127) or said("executable file not found", os.path.basename(self.python).lower()):
            return PythonNotFound, "%s has no %s" % (where, self.python)
        if status == 125:
            return ContainerError, "%s could not start the container" % engine
        if status == 0 and self.container is None:
            return ContainerError, ("the container of %s exited at once (status 0) before the agent "
                                    "started: does its entrypoint run the command it is given?" % where)
        return super()._explain_failed_start(status, stderr)  # else the exit status and stderr say it best
