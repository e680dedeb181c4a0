"""Tunnels into containers: ``Docker``, which drives podman with the same code. API layer.

A container tunnel is a pipe tunnel whose command is the engine's ``run -i`` (a fresh
container, removed when the tunnel closes) or ``exec -i`` (a running one). Images are never
pulled: a missing image is an error, not a download in the middle of a fan-out.
"""

import os
import re
import shutil
import sys
from typing import List, Optional, Sequence

from chopsticks.bootstrap import EXIT_OLD_PYTHON
from chopsticks.errors import ContainerError, PythonNotFound
from chopsticks.transports.process import ProcessPipe
from chopsticks.tunnel import SubprocessTunnel

# What engines accept as a container name.
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
ENGINE_VARIABLE = "CHOPSTICKS_CONTAINER_ENGINE"
# The original's default: the official image of the controller's own Python version.
DEFAULT_IMAGE = "python:%d.%d" % sys.version_info[:2]


def default_engine() -> str:
    """``$CHOPSTICKS_CONTAINER_ENGINE``, else ``docker`` or ``podman``, whichever is installed."""
    chosen = os.environ.get(ENGINE_VARIABLE)
    if chosen:
        return chosen
    for engine in ("docker", "podman"):
        if shutil.which(engine):
            return engine
    return "docker"


class Docker(SubprocessTunnel):
    """A tunnel to an agent in a container.

    ``Docker('worker-1', image='python:3.12')`` starts a fresh container named ``worker-1``
    (``run -i --rm``; ``rm=False`` keeps it after the tunnel closes). It ends when the tunnel
    closes, and also when the controller dies, since the agent exits at the end of its stdin.
    ``Docker('app', container='app-7f3c')`` runs the agent inside a running container
    (``exec -i``). ``engine`` is the engine's command (default: ``$CHOPSTICKS_CONTAINER_ENGINE``,
    else ``docker``, else ``podman``); ``engine_args`` are extra options to ``run`` or
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
        if isinstance(engine_args, str) or not all(isinstance(a, str) for a in engine_args):
            raise TypeError("Docker(%r): engine_args must be a list of strings" % name)
        self.container = container
        self.image = None if container is not None else (image or DEFAULT_IMAGE)
        self.rm = rm
        self.engine = engine or default_engine()
        self.engine_args = list(engine_args)

    def cmd_args(self) -> List[str]:
        python = super().cmd_args()
        if self.container is not None:
            return [self.engine, "exec", "-i"] + self.engine_args + [self.container] + python
        keep = ["--rm"] if self.rm else []
        return ([self.engine, "run", "-i", "--pull=never", "--name", self.host] + keep + self.engine_args
                + [str(self.image)] + python)

    def _open_pipe(self, timeout: float):
        if shutil.which(self.engine) is None:
            raise ContainerError("[%s] no container engine: %r is not installed (not found on PATH); "
                                 "install Docker or podman, or choose one with engine= or $%s"
                                 % (self.host, self.engine, ENGINE_VARIABLE))
        pipe: ProcessPipe
        pipe, started = super()._open_pipe(timeout)
        if self.container is None and self.rm:
            # A client we had to kill may leave its container behind: remove it by name
            # (podman would first wait 10 s for a polite stop; docker's --force kills at once).
            wait = ["--time", "0"] if os.path.basename(self.engine) == "podman" else []
            pipe.after_kill = [self.engine, "rm", "--force"] + wait + [self.host]
        return pipe, started

    def _explain_failed_start(self, status: Optional[int], stderr: List[str]):
        text = "\n".join(stderr).lower()
        engine = os.path.basename(self.engine)
        if "cannot connect to the docker daemon" in text or "docker daemon running" in text:
            return ContainerError, ("%s cannot reach its daemon: is it running? (on a machine with "
                                    "podman: engine='podman')" % engine)
        if self.container is not None:
            if "no such container" in text:
                return ContainerError, "there is no container named %r" % self.container
            if "state improper" in text or "is not running" in text:
                return ContainerError, "container %r is not running" % self.container
        else:
            if any(s in text for s in ("image not known", "no such image", "unable to find image",
                                       "pull access denied", "manifest unknown")):
                return ContainerError, ("image %r is not on this machine, and chopsticks never pulls: "
                                        "run `%s pull %s` first" % (self.image, engine, self.image))
            if "already in use" in text:
                return ContainerError, ("the container name %r is already taken: remove that container "
                                        "(`%s rm -f %s`) or name this tunnel differently"
                                        % (self.host, engine, self.host))
        where = "container %r" % self.container if self.container is not None else "image %r" % self.image
        if "executable file not found" in text or "no such file or directory" in text or status in (126, 127):
            return PythonNotFound, "%s has no %s" % (where, self.python)
        if status == EXIT_OLD_PYTHON:
            return None  # the agent's own check said why
        if status == 125:
            return ContainerError, "%s could not start the container" % engine
        return ContainerError, ("the container of %s exited at once (status %s) before the agent "
                                "started: does its entrypoint run the command it is given?" % (where, status))

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        what = "container=%r" % self.container if self.container is not None else "image=%r" % self.image
        return "<Docker %r %s engine=%r %s>" % (self.host, what, self.engine, state)
