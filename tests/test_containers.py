"""Pipe tunnels for real: containers under rootful podman on three Pythons, Sudo, and your own.

The images (scripts/containers builds them) are Debian bullseye, bookworm and trixie: the
remote side runs on Python 3.9, 3.11 and 3.13, each a separate "host" with its own Python.
"""

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import time

import gevent
import pytest

import remote_helpers as rh
from conftest import IMAGES, ROOT, podman_containers, require
from chopsticks import facts
from chopsticks.errors import ConnectError, ConnectTimeout, ContainerError, PythonNotFound, RemoteException
from chopsticks.group import Group
from chopsticks.tunnel import Docker, SubprocessTunnel, Sudo

VERSIONS = sorted(IMAGES, key=lambda v: tuple(map(int, v.split("."))))


@pytest.fixture(scope="module", params=VERSIONS)
def remote(request, podman):
    """A fresh container of one image, for the scenarios that share it; removed at the end."""
    name = "ct-%s-py%s" % (os.urandom(3).hex(), request.param.replace(".", ""))
    tunnel = Docker(name, image=IMAGES[request.param], engine=podman)
    yield request.param, tunnel
    tunnel.close()
    assert podman_containers(name) == [], "the container outlived its tunnel"


# -- the main scenarios, on every supported Python --------------------------------------------

def test_calls_run_on_the_images_python(remote):
    """Stage 1, the bundle and the agent with its own msgpack codec start on each version."""
    version, tunnel = remote
    assert tunnel.call(rh.add, 2, 3) == 5
    info = tunnel.remote_info
    assert "%d.%d" % tuple(info["python"][:2]) == version
    assert info["pid"] == 1
    assert "%d.%d" % tuple(tunnel.call(facts.python_version)[:2]) == version


def test_values_and_concurrent_calls(remote):
    """Results of every type come back; calls run concurrently."""
    _, tunnel = remote
    value = {"bytes": b"\x00\xff", "text": "caf\u00e9", "list": [1, 2.5, None, True], "big": 2 ** 70,
             "nested": {"t": (1, 2)}}
    assert tunnel.call(rh.echo, value) == value
    futures = [tunnel.call_async(rh.wait_for_peers, "container-barrier", 4) for _ in range(4)]
    assert len({f.result() for f in futures}) == 4


def test_imports_on_demand_and_package_data(remote, demo_pkg):
    """A package only the controller has is imported from it, data included."""
    _, tunnel = remote
    deep, _ = demo_pkg
    path, loader, value, doubled = tunnel.call(deep.where)
    assert (loader, value, doubled) == ("Importer", 42, 4)
    assert tunnel.call(deep.data, "data/info.txt") == b"package data\n"


def test_facts_gather_on_every_python(remote):
    """Every fact works on every version (the fan-out's default job)."""
    version, tunnel = remote
    gathered = tunnel.call(facts.all)
    assert set(gathered) == set(facts.FACTS)
    assert gathered["hostname"] and gathered["cpus"] >= 1 and gathered["memory"]["total"] > 0
    assert gathered["os_release"]["ID"] == "debian"


def test_remote_errors_carry_type_and_traceback(remote, demo_pkg):
    """An exception on the remote is a RemoteException with its type and source lines."""
    _, tunnel = remote
    with pytest.raises(RemoteException) as info:
        tunnel.call(rh.raise_value_error, "bad value")
    assert info.value.type_name == "ValueError" and "bad value" in str(info.value)
    assert "in raise_value_error" in info.value.remote_traceback
    deep, _ = demo_pkg
    with pytest.raises(RemoteException) as info:
        tunnel.call(deep.fail)
    assert "the source line of a shipped module" in info.value.remote_traceback


def test_remote_output_reaches_the_controller(remote, capfd):
    """print, stderr and a child's output in the container come back as [name] lines."""
    _, tunnel = remote
    tunnel.call(rh.print_lines, "from-print")
    tunnel.call(rh.write_stderr, "from-stderr\n")
    assert tunnel.call(rh.subprocess_prints, "from-child") == 0
    tunnel.call(rh.add, 0, 0)  # the output is in before this result
    err = capfd.readouterr().err
    for line in ("from-print", "from-stderr", "from-child"):
        assert "[%s] %s\n" % (tunnel.host, line) in err


def test_put_and_fetch_keep_bytes_mode_and_mtime(remote, tmp_path):
    """A file goes in and comes back byte for byte, with its mode and mtime."""
    _, tunnel = remote
    data = os.urandom(3 << 20) + b"tail"
    source = tmp_path / "payload.bin"
    source.write_bytes(data)
    os.chmod(source, 0o640)
    os.utime(source, (1_600_000_000, 1_600_000_000))
    sent = tunnel.put(str(source), "/tmp/payload.bin")
    assert sent["size"] == len(data) and sent["sha256"] == hashlib.sha256(data).hexdigest()
    assert tunnel.call(rh.file_sha256, "/tmp/payload.bin") == sent["sha256"]
    back = tmp_path / "back.bin"
    got = tunnel.fetch("/tmp/payload.bin", str(back))
    assert back.read_bytes() == data and got["sha1sum"] == hashlib.sha1(data).hexdigest()
    assert os.stat(back).st_mode & 0o777 == 0o640 and os.stat(back).st_mtime == 1_600_000_000
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f.txt").write_text("in a tree\n")
    os.symlink("sub/f.txt", tree / "link")
    assert tunnel.put(str(tree), "/tmp/tree")["files"] == 1
    fetched = tunnel.fetch("/tmp/tree", str(tmp_path / "tree-back"))
    assert fetched["files"] == 1 and (tmp_path / "tree-back" / "sub" / "f.txt").read_text() == "in a tree\n"
    assert os.readlink(tmp_path / "tree-back" / "link") == "sub/f.txt"


def test_remote_modules_compile_under_every_python(podman):
    """Every module the remote runs is compiled by each real interpreter, warnings as errors
    (3.9 is the oldest supported; a newer one may warn on what an older one accepted)."""
    from chopsticks import bootstrap
    from test_remote_safe import PACKAGE, REMOTE_SAFE
    sources = {}
    for rel in REMOTE_SAFE:
        with open(os.path.join(PACKAGE, rel), encoding="utf-8") as f:
            sources["chopsticks/" + rel] = f.read()
    sources["<stage1>"] = bootstrap.stage1_source()
    check = ("import json, sys\n"
             "for name, source in json.load(sys.stdin).items():\n"
             "    compile(source, name, 'exec')\n"
             "print(len(sys.argv), 'ok')\n")
    for version in VERSIONS:
        out = subprocess.run([podman, "run", "-i", "--rm", "--pull=never", IMAGES[version], "python3", "-W",
                              "error", "-c", check], input=json.dumps(sources), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and out.stdout == "1 ok\n", (version, out.stderr)


def _gone(name, within=30.0):
    """Whether no container named ``name`` exists within ``within`` seconds."""
    deadline = time.monotonic() + within
    while podman_containers(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    return podman_containers(name) == []


# -- the original chopsticks' example, as written ---------------------------------------------

ORIGINAL_EXAMPLE = '''\
"""Exercise the chopsticks Docker connectivity."""
from __future__ import print_function
from chopsticks.tunnel import Docker
from chopsticks.group import Group
from chopsticks.facts import python_version

group = Group([
    Docker('worker-1', image='chopsticks/python:3.9'),
    Docker('worker-2', image='chopsticks/python:3.11'),
    Docker('worker-3', image='chopsticks/python:3.13'),
])

for host, python_version in group.call(python_version).items():
    print('%s Python version:' % host, python_version)
'''


def test_the_original_example_runs_as_written(podman, tmp_path, no_leaks):
    """The original's Docker example, only its images renamed, under a `docker` that is podman."""
    for name in ("worker-1", "worker-2", "worker-3"):
        assert not podman_containers(name), "a container named %s already exists" % name
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(subprocess.run(["which", "podman"], capture_output=True, text=True).stdout.strip(),
               bin_dir / "docker")
    script = tmp_path / "example.py"
    script.write_text(ORIGINAL_EXAMPLE)
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), PYTHONPATH=ROOT)
    env.pop("CHOPSTICKS_CONTAINER_ENGINE", None)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = sorted(out.stdout.splitlines())
    assert [line.split(", ")[:2] for line in lines] == [  # the images' patch releases may move
        ["worker-1 Python version: [3", "9"], ["worker-2 Python version: [3", "11"],
        ["worker-3 Python version: [3", "13"]], lines
    for name in ("worker-1", "worker-2", "worker-3"):  # the agents exit with the script
        assert _gone(name)


def test_a_group_of_containers_puts_and_fetches(podman, container_names, tmp_path):
    """Group.put sends one file to three Pythons; Group.fetch brings each copy back."""
    group = Group([Docker(container_names + v.replace(".", ""), image=IMAGES[v], engine=podman) for v in VERSIONS])
    try:
        source = tmp_path / "conf.txt"
        source.write_text("setting = 1\n")
        group.put(str(source), "/etc/chopsticks-{host}.conf").raise_failures()
        for tunnel in group.tunnels:
            assert tunnel.call(os.path.exists, "/etc/chopsticks-%s.conf" % tunnel.host)
        group.put(str(source), "/etc/chopsticks.conf").raise_failures()
        fetched = group.fetch("/etc/chopsticks.conf", str(tmp_path / "back" / "{host}.conf"),
                              make_dirs=True)
        fetched.raise_failures()
        for tunnel in group.tunnels:
            assert (tmp_path / "back" / (tunnel.host + ".conf")).read_text() == "setting = 1\n"
    finally:
        group.close()


# -- a running container (exec) ----------------------------------------------------------------

def _start_container(podman, name, image=IMAGES["3.11"], run=True):
    argv = [podman, "run", "--detach"] if run else [podman, "create"]
    subprocess.run(argv + ["--name", name, image, "sleep", "600"], check=True, capture_output=True)


def _remove_container(podman, name):
    subprocess.run([podman, "rm", "--force", "--time", "0", name], check=True, capture_output=True)


def test_exec_into_a_running_container(podman, container_names):
    """container= runs the agent beside the container's own processes; closing leaves it running."""
    name = container_names + "app"
    _start_container(podman, name)
    try:
        with Docker("app", container=name, engine=podman) as tunnel:
            assert tunnel.call(os.getpid) != 1  # PID 1 is the container's own sleep
            assert tunnel.call(facts.hostname)
        assert podman_containers(name) == [name]
        state = subprocess.run([podman, "inspect", "--format", "{{.State.Running}}", name],
                               capture_output=True, text=True).stdout.strip()
        assert state == "true"
    finally:
        _remove_container(podman, name)


def test_exec_into_a_missing_or_stopped_container(podman, container_names):
    """No such container, or one not running: a ContainerError that says which."""
    with pytest.raises(ContainerError) as info:
        Docker("x", container=container_names + "nowhere", engine=podman).call(rh.add, 1, 1)
    assert "no container named %r" % (container_names + "nowhere") in str(info.value)
    name = container_names + "stopped"
    _start_container(podman, name, run=False)
    try:
        with pytest.raises(ContainerError) as info:
            Docker("x", container=name, engine=podman).call(rh.add, 1, 1)
        assert "container %r is not running" % name in str(info.value)
    finally:
        _remove_container(podman, name)


# -- lifetimes -----------------------------------------------------------------------------------

CONTROLLER = '''\
import sys, time
from chopsticks.tunnel import Docker
tunnel = Docker(sys.argv[1], image=sys.argv[2], engine="podman")
tunnel.connect()
print("ready", flush=True)
tunnel.call(time.sleep, 600)
'''


def test_container_is_removed_when_the_controller_dies(podman, container_names, tmp_path):
    """A controller killed mid-call (SIGKILL: no cleanup of its own) leaves no container: the
    agent sees its stdin end, exits, and --rm removes the container."""
    name = container_names + "orphan"
    script = tmp_path / "controller.py"
    script.write_text(CONTROLLER)
    proc = subprocess.Popen([sys.executable, str(script), name, IMAGES["3.11"]], stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=ROOT), text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.5)  # the call is running in the container
        assert podman_containers(name) == [name]
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert _gone(name)


@pytest.fixture(scope="module")
def odd_image(podman):
    """An image without python3, with a `stall` that never reads its stdin."""
    image = "chopsticks/test-odd:%s" % os.urandom(3).hex()
    builder = "ct-build-" + os.urandom(3).hex()
    subprocess.run([podman, "run", "--name", builder, IMAGES["3.11"], "sh", "-c",
                    "rm -f /usr/bin/python3*; printf '#!/bin/sh\\nexec sleep 600\\n' > /usr/local/bin/stall; "
                    "chmod +x /usr/local/bin/stall"], check=True, capture_output=True)
    try:
        subprocess.run([podman, "commit", "--quiet", builder, image], check=True, capture_output=True)
    finally:
        _remove_container(podman, builder)
    yield image
    subprocess.run([podman, "rmi", "--force", image], capture_output=True)


def test_an_agent_that_never_starts_times_out_and_its_container_goes(podman, container_names, odd_image):
    """A command that never reads the bundle: ConnectTimeout, the engine's client is killed and
    the container it left is removed."""
    name = container_names + "stall"
    tunnel = Docker(name, image=odd_image, python="/usr/local/bin/stall", engine=podman, connect_timeout=3)
    started = time.monotonic()
    with pytest.raises(ConnectTimeout):
        tunnel.call(rh.add, 1, 1)
    assert time.monotonic() - started < 15
    assert podman_containers(name) == []


def test_a_connect_cancelled_from_outside_leaves_no_container(podman, container_names, odd_image):
    """A caller's own timeout (or a group's deadline, or Ctrl-C) during the agent's start:
    the container of that attempt is removed all the same."""
    name = container_names + "cancelled"
    tunnel = Docker(name, image=odd_image, python="/usr/local/bin/stall", engine=podman, connect_timeout=60)
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(2):
            tunnel.call(rh.add, 1, 1)
    assert podman_containers(name) == []
    assert not tunnel.connected


# -- bad input -----------------------------------------------------------------------------------

def test_missing_image_is_not_pulled(podman, container_names):
    """An image that is not here: a ContainerError naming it, at once (no pull attempted)."""
    started = time.monotonic()
    with pytest.raises(ContainerError) as info:
        Docker(container_names + "a", image="chopsticks/no-such-image:1", engine=podman).call(rh.add, 1, 1)
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "image 'chopsticks/no-such-image:1' is not on this machine" in message and "never pulls" in message


def test_no_engine_installed(monkeypatch, tmp_path, no_leaks):
    """No engine on PATH: a ContainerError naming the command, before anything runs."""
    with pytest.raises(ContainerError) as info:
        Docker("ct-no-engine", image=IMAGES["3.11"], engine="no-such-engine").call(rh.add, 1, 1)
    assert "'no-such-engine' is not installed" in str(info.value)
    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker nor podman
    monkeypatch.delenv("CHOPSTICKS_CONTAINER_ENGINE", raising=False)
    with pytest.raises(ContainerError) as info:
        Docker("ct-no-engine", image=IMAGES["3.11"]).call(rh.add, 1, 1)
    assert "no container engine: 'docker' is not installed" in str(info.value)


def test_container_that_exits_at_once(podman, container_names):
    """An entrypoint that ignores the command: the container exits before the agent starts."""
    tunnel = Docker(container_names + "quick", image=IMAGES["3.11"], engine=podman,
                    engine_args=["--entrypoint", "/bin/true"])
    with pytest.raises(ContainerError) as info:
        tunnel.call(rh.add, 1, 1)
    assert "exited at once (status 0) before the agent started" in str(info.value)


def test_image_without_python(podman, container_names, odd_image):
    """No python3 in the image (or a python= that is not there): PythonNotFound naming both."""
    with pytest.raises(PythonNotFound) as info:
        Docker(container_names + "nopy", image=odd_image, engine=podman).call(rh.add, 1, 1)
    assert "image %r has no python3" % odd_image in str(info.value)
    with pytest.raises(PythonNotFound) as info:
        Docker(container_names + "nopy", image=IMAGES["3.9"], python="python3.99", engine=podman).call(rh.add, 1, 1)
    assert "has no python3.99" in str(info.value)


def test_container_name_already_taken(podman, container_names):
    """A name in use: a ContainerError that says so, and the other container is untouched."""
    name = container_names + "taken"
    _start_container(podman, name)
    try:
        with pytest.raises(ContainerError) as info:
            Docker(name, image=IMAGES["3.11"], engine=podman).call(rh.add, 1, 1)
        assert "the container name %r is already taken" % name in str(info.value)
        assert podman_containers(name) == [name]
    finally:
        _remove_container(podman, name)


@pytest.mark.parametrize("status, stderr", [
    (1, ["OSError: [Errno 98] Address already in use"]),  # the container's own words, not the engine's
    (1, ["FileNotFoundError: [Errno 2] No such file or directory: '/srv/data'"]),
    (137, ["Killed"]),
    (86, []),
])
def test_the_containers_own_errors_are_not_mistaken_for_the_engines(status, stderr):
    """Only the engine's own messages are explained; anything else keeps its exit status and
    stderr (the generic error), rather than a confident wrong diagnosis."""
    tunnel = Docker("web", image="img")
    assert tunnel._explain_failed_start(status, stderr) is None


def test_bad_arguments_are_refused_at_once():
    """Mistakes in the tunnel's own arguments raise before anything runs."""
    with pytest.raises(ValueError, match="not both"):
        Docker("a", image="x", container="y")
    with pytest.raises(ValueError, match="is not a container name"):
        Docker("web 1", image="x")
    with pytest.raises(TypeError, match="engine_args"):
        Docker("a", image="x", engine_args="--rm")
    with pytest.raises(ValueError, match="Sudo needs a user name"):
        Sudo("-u")


def test_names_and_images_that_look_like_engine_options_are_refused():
    """A name, container or image starting with '-' would be read by the engine as an option:
    a ValueError at construction, saying so."""
    for bad in ("--privileged", "-v"):
        with pytest.raises(ValueError, match="is not an image name .*read one starting with '-' as an option"):
            Docker("a", image=bad)
        with pytest.raises(ValueError, match="is not a container name"):
            Docker(bad, image="x")
        with pytest.raises(ValueError, match="is not a container name"):
            Docker("a", container=bad)
    with pytest.raises(ValueError, match="is not an image name"):
        Docker("a", image=" ")


def _engines_dir(tmp_path, docker):
    """A directory holding only ``docker`` (a script that logs each run, then runs ``docker``)
    and the real podman, to be the whole PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker-runs"
    script = bin_dir / "docker"
    script.write_text('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' % (log, docker))
    script.chmod(0o755)
    os.symlink(shutil.which("podman"), bin_dir / "podman")
    return bin_dir, log


def test_the_default_engine_is_one_that_answers(podman, container_names, monkeypatch, tmp_path):
    """This machine's docker client without a daemon, next to podman: the default engine is
    podman, and a tunnel on it works; docker is asked once per process; the variable still wins."""
    daemonless = "/usr/local/bin/docker"
    require(os.path.exists(daemonless) and subprocess.run([daemonless, "version"], capture_output=True).returncode,
            "no docker client without a daemon at %s" % daemonless)
    bin_dir, log = _engines_dir(tmp_path, daemonless)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CHOPSTICKS_CONTAINER_ENGINE", raising=False)
    tunnel = Docker(container_names + "default", image=IMAGES["3.11"])
    assert tunnel.engine == "podman"
    with tunnel:
        assert tunnel.call(rh.add, 1, 2) == 3
    assert Docker("again", image="x").engine == "podman"
    assert log.read_text().splitlines() == ["version --format {{.Server.Version}}"]  # asked once
    monkeypatch.setenv("CHOPSTICKS_CONTAINER_ENGINE", "docker")
    assert Docker("chosen", image="x").engine == "docker"


def test_a_docker_that_answers_stays_the_default(podman, monkeypatch, tmp_path):
    """A ``docker`` that reaches its engine (here podman under that name) is still preferred."""
    bin_dir, log = _engines_dir(tmp_path, shutil.which("podman"))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CHOPSTICKS_CONTAINER_ENGINE", raising=False)
    assert Docker("a", image="x").engine == "docker"
    assert log.read_text().splitlines() == ["version --format {{.Server.Version}}"]


# -- Sudo, and a pipe tunnel of your own ---------------------------------------------------------

def test_sudo_runs_the_agent_as_another_user(test_user, no_leaks):
    """Sudo() is root, named root@localhost; Sudo(user) runs as that user."""
    user, _ = test_user
    with Sudo() as tunnel:
        assert tunnel.host == "root@localhost" and tunnel.call(os.getuid) == 0
    with Sudo(user, name="as-test-user") as tunnel:
        assert tunnel.call(os.getuid) == pwd.getpwnam(user).pw_uid


def test_sudo_errors(test_user, no_leaks):
    """An unknown user, and a sudo that wants a password (sudo run by a user without
    NOPASSWD): each a ConnectError that says what sudo said."""
    with pytest.raises(ConnectError) as info:
        Sudo("chopsticks-no-such-user").call(rh.add, 1, 1)
    assert "unknown user" in str(info.value)
    user, _ = test_user

    class SudoFromTestUser(Sudo):
        def cmd_args(self):
            return ["runuser", "-u", user, "--"] + super().cmd_args()

    with pytest.raises(ConnectError) as info:
        SudoFromTestUser().call(rh.add, 1, 1)
    assert "sudo asks for a password" in str(info.value)


class Nice(SubprocessTunnel):
    """The README's pattern for a new pipe tunnel (there: kubectl exec), with `nice`."""

    def __init__(self, name, niceness=7, **options):
        super().__init__(name, **options)
        self.niceness = niceness

    def cmd_args(self):
        return ["nice", "-n", str(self.niceness)] + super().cmd_args()


class OriginalStyle(SubprocessTunnel):
    """A tunnel written for the original chopsticks: host set first, PYTHON_ARGS, python3."""

    python3 = "/usr/bin/python3"

    def __init__(self, name):
        self.host = name
        super(OriginalStyle, self).__init__()

    def cmd_args(self):
        return ["nice", "-n", "3", self.python3] + self.PYTHON_ARGS


def test_a_tunnel_written_for_the_original_runs_unchanged(no_leaks):
    with OriginalStyle("old-style") as tunnel:
        assert tunnel.host == "old-style"
        assert tunnel.call(os.nice, 0) == 3


def test_a_pipe_tunnel_of_your_own(no_leaks):
    """A subclass that wraps the python command is a full tunnel; a missing wrapper is a clear error."""
    with Nice("nice-1") as tunnel:
        assert tunnel.call(os.nice, 0) == 7
        assert tunnel.call(rh.add, 1, 2) == 3

    class Missing(SubprocessTunnel):
        def cmd_args(self):
            return ["kubectl-not-installed", "exec", "-i", "pod", "--"] + super().cmd_args()

    with pytest.raises(ConnectError) as info:
        Missing("pod").call(rh.add, 1, 1)
    assert "cannot start kubectl-not-installed: it is not installed" in str(info.value)


# -- the fan-out command -------------------------------------------------------------------------

def test_fanout_over_fresh_containers_and_running_ones(podman, container_names):
    """--transport docker: --image starts a container per host; without it, hosts are running
    containers to exec into."""
    base = [sys.executable, "-m", "chopsticks.fanout", "--transport", "docker", "--engine", podman,
            "--format", "json"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    hosts = "%sa,%sb" % (container_names, container_names)
    out = subprocess.run(base + ["--image", IMAGES["3.13"], "-H", hosts, "facts", "python_version"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)["results"]
    assert sorted(r["host"] for r in records) == sorted(hosts.split(","))
    assert all(r["status"] == "ok" and r["value"]["python_version"][:2] == [3, 13] for r in records)
    running = container_names + "running"
    _start_container(podman, running, image=IMAGES["3.9"])
    try:
        out = subprocess.run(base + ["-H", running, "run", "cat /etc/debian_version"], capture_output=True,
                             text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["results"][0]["value"]["stdout"].startswith("11.")
    finally:
        _remove_container(podman, running)
    out = subprocess.run(base + ["--image", "chopsticks/no-such-image:1", "-H", container_names + "c",
                                 "facts"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 3 and "never pulls" in out.stdout  # unreachable: no agent
