"""Tunnels through other tunnels (``via=``): the intermediate's agent starts the far agent's
command and relays its bytes; the controller drives the far agent like any tunnel. Against
real local agents, the loopback SSH fleet, podman and sudo."""

import hashlib
import os
import signal
import subprocess
import time

import gevent
import pytest

import remote_helpers as rh
from conftest import IMAGES, children_of
from chopsticks import CallTimeout, ContainerError, PythonNotFound, RemoteException, TunnelClosed
from chopsticks.containers import Docker
from chopsticks.group import Group
from chopsticks.tunnel import Local, SSHTunnel, Sudo


@pytest.fixture
def chain(no_leaks):
    """Three local agents: a, b through a, c through b."""
    a = Local("a")
    b = Local("b", via=a)
    c = Local("c", via=b)
    try:
        yield a, b, c
    finally:
        for tunnel in (c, b, a):
            tunnel.close()


def test_the_far_agent_is_a_child_of_the_intermediate_and_named_by_the_whole_path(chain):
    """Each far agent is started by its intermediate's agent; names, hosts and reprs show the path."""
    a, b, c = chain
    a_pid, b_pid = a.call(rh.getpid), b.call(rh.getpid)
    assert b.call(rh.parent_pid) == a_pid
    assert c.call(rh.parent_pid) == b_pid
    assert (b.host, c.host, c.name) == ("a -> b", "a -> b -> c", "c")
    assert repr(c) == "Local('c', via=Local('b', via=Local('a')))"
    assert repr(Local("x")) == "Local('x')"


def test_calls_imports_errors_and_concurrency_through_two_hops(chain, demo_pkg):
    """Two hops away: calls, a package only the controller has, remote errors, concurrent calls and a 3 MiB result."""
    _, _, c = chain
    deep, _ = demo_pkg
    assert c.call(rh.add, 2, b=3) == 5
    assert c.call(deep.where)[2:] == (42, 4)  # a package only the controller has, imported through the chain
    with pytest.raises(RemoteException) as info:
        c.call(rh.raise_value_error, "far away")
    assert str(info.value).startswith("[a -> b -> c] ValueError: far away")
    futures = [c.call_async(rh.wait_for_peers, "via-barrier", 4) for _ in range(4)]
    assert len({f.result(timeout=20) for f in futures}) == 4
    assert c.call(rh.big_bytes, 3 << 20) == b"x" * (3 << 20)


def test_output_lines_carry_the_full_path(chain, capfd):
    """What the far agent prints reaches the controller's stderr under the whole path."""
    _, _, c = chain
    c.call(rh.print_lines, "from-the-far-end")
    c.call(rh.add, 0, 0)
    err = capfd.readouterr().err
    assert "a -> b -> c" in err and "from-the-far-end" in err


def test_put_and_fetch_through_two_hops(chain, tmp_path):
    """put and fetch through two hops keep every byte and the mode."""
    _, _, c = chain
    data = os.urandom((5 << 20) + 123)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    src.chmod(0o640)
    result = c.put(str(src), str(tmp_path / "there.bin"))
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "there.bin").read_bytes() == data
    back = c.fetch(str(tmp_path / "there.bin"), str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data and back["size"] == len(data)
    assert oct((tmp_path / "there.bin").stat().st_mode & 0o777) == oct(0o640)


def test_a_call_timeout_through_a_hop_leaves_the_tunnel_usable(chain):
    """A call's timeout through a hop is a CallTimeout, and the tunnel goes on."""
    _, b, _ = chain
    with pytest.raises(CallTimeout):
        b.call(rh.sleep_and_return, 30, None, timeout=0.5)
    assert b.call(rh.add, 1, 1) == 2


def test_closing_the_last_tunnel_through_an_intermediate_leaves_it_usable(chain):
    """Closing a far tunnel ends its agent on the intermediate, which keeps serving, and it starts again."""
    a, b, _ = chain
    a_pid = a.call(rh.getpid)
    b.call(rh.getpid)
    assert len(children_of(a_pid, zombies=False)) == 1  # b's agent
    b.close()
    deadline = time.monotonic() + 10
    while children_of(a_pid, zombies=False) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children_of(a_pid, zombies=False) == []
    assert a.call(rh.getpid) == a_pid  # the same agent, still serving
    assert b.call(rh.add, 2, 2) == 4  # and b starts again through it


def test_an_intermediate_killed_mid_call_fails_every_tunnel_through_it_naming_it(chain):
    """A killed intermediate fails the calls through it (one and two hops down) naming it; others are untouched."""
    a, b, c = chain
    other = Local("other")
    try:
        a_pid, other_pid = a.call(rh.getpid), other.call(rh.getpid)
        calls = [b.call_async(rh.sleep_and_return, 30, 1), c.call_async(rh.sleep_and_return, 30, 2)]
        gevent.sleep(0.3)
        os.kill(a_pid, signal.SIGKILL)
        for future, host in zip(calls, ("a -> b", "a -> b -> c")):
            with pytest.raises(TunnelClosed) as info:
                future.result(timeout=10)
            assert str(info.value).startswith("[%s]" % host)
            assert "the tunnel through a" in str(info.value) and "killed by signal 9" in str(info.value)
        assert other.call(rh.getpid) == other_pid  # a tunnel not through it is untouched
        assert c.call(rh.add, 1, 2) == 3  # the chain starts again on the next use
    finally:
        other.close()


def test_a_command_the_intermediate_cannot_run_is_a_clear_error(no_leaks):
    """An interpreter missing on the intermediate is PythonNotFound naming the path; the intermediate goes on."""
    a = Local("a")
    try:
        with pytest.raises(PythonNotFound) as info:
            Local("far", python="/nonexistent/python3", via=a).call(rh.getpid)
        assert "[a -> far]" in str(info.value) and "cannot run /nonexistent/python3" in str(info.value)
        assert a.call(rh.add, 1, 1) == 2
    finally:
        a.close()


def test_the_intermediates_ssh_gets_every_option():
    """user@host:port is split for the ssh client; an address of its own and agent=False pass on."""
    from chopsticks.ssh_tunnel import ssh_client_argv
    from chopsticks.transports.ssh_options import SSHOptions
    argv = ssh_client_argv("deploy@db-7:2222", SSHOptions(hostname="10.0.0.7", agent=False, key="k"))
    assert argv[-2:] == ["--", "db-7"]
    for pair in (["-l", "deploy"], ["-p", "2222"], ["-o", "HostName=10.0.0.7"], ["-o", "IdentityAgent=none"],
                 ["-i", "k"]):
        assert any(argv[i:i + 2] == pair for i in range(len(argv))), (pair, argv)


def test_via_takes_only_a_tunnel():
    """via= refuses what is not a tunnel, and an SSH password the intermediate's ssh could not use."""
    with pytest.raises(TypeError, match="via= takes a tunnel"):
        Local("x", via="web-1")
    with pytest.raises(ValueError, match="BatchMode"):
        SSHTunnel("db-7", via=Local(), password="secret")


# -- through an SSH host of the fleet -----------------------------------------------------------

@pytest.fixture
def ssh_host(fleet, ssh_options, no_leaks):
    tunnel = SSHTunnel(fleet.hosts[0], options=ssh_options)
    try:
        yield tunnel
    finally:
        tunnel.close()


def test_into_a_fresh_container_and_a_running_one_on_an_ssh_host(ssh_host, podman, container_names):
    """Through an SSH host: a fresh container of an image, exec into a running one, and a missing one's error."""
    fresh = Docker(container_names + "fresh", image=IMAGES["3.9"], via=ssh_host)
    running = container_names + "running"
    subprocess.run([podman, "run", "-d", "--pull=never", "--name", running, IMAGES["3.13"], "sleep", "600"],
                   check=True, capture_output=True)
    try:
        assert fresh.call(rh.python_version)[:2] == [3, 9]
        inside = Docker("app", container=running, via=ssh_host)
        assert inside.call(rh.python_version)[:2] == [3, 13]
        assert inside.host == "%s -> app" % ssh_host.host
        inside.close()
        fresh.close()
    finally:
        subprocess.run([podman, "rm", "--force", "--time", "0", running], capture_output=True)
    with pytest.raises(ContainerError, match="no container named"):
        Docker("gone", container=container_names + "never", via=ssh_host).call(rh.getpid)


def test_as_a_sudo_user_on_an_ssh_host(ssh_host, test_user):
    """Through an SSH host, an agent runs as another user by sudo there."""
    user, _ = test_user
    tunnel = Sudo(user, via=ssh_host)
    try:
        assert tunnel.call(rh.whoami) == user
        assert tunnel.host == "%s -> %s@localhost" % (ssh_host.host, user)
    finally:
        tunnel.close()


def test_a_far_host_reached_by_the_intermediates_own_ssh_client_and_a_chain_of_two(fleet, ssh_host):
    """An SSH host reached by the intermediate's own ssh client, and a local agent one more hop down."""
    options = dict(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="")
    far = SSHTunnel(fleet.hosts[1], via=ssh_host, **options)
    farther = Local("end", via=far)
    try:
        assert far.call(rh.add, 20, 22) == 42
        assert farther.call(rh.add, 1, 2) == 3
        assert farther.host == "%s -> %s -> end" % (fleet.hosts[0], fleet.hosts[1])
    finally:
        farther.close()
        far.close()


def test_a_group_reaches_a_container_on_each_of_several_hosts(fleet, ssh_options, podman, container_names):
    """A Group of containers, one through each of three SSH hosts, keyed by their paths."""
    hosts = [SSHTunnel(host, options=ssh_options) for host in fleet.hosts[:3]]
    group = Group([Docker(container_names + str(index), image=IMAGES["3.11"], via=host)
                   for index, host in enumerate(hosts)])
    try:
        result = group.call(rh.python_version)
        assert result.ok, result
        assert sorted(result) == sorted("%s -> %s%d" % (host.host, container_names, index)
                                        for index, host in enumerate(hosts))
    finally:
        group.close()
        for host in hosts:
            host.close()


# -- the CLI: a container on each of several hosts -------------------------------------------

def test_the_cli_gathers_facts_from_a_container_on_each_host(fleet, podman, container_names):
    """fanout --container: facts from inside a container on each of four hosts; a missing one fails alone."""
    from test_fanout import fanout, records, ssh_args
    name = container_names + "app"
    subprocess.run([podman, "run", "-d", "--pull=never", "--name", name, IMAGES["3.9"], "sleep", "600"],
                   check=True, capture_output=True)
    try:
        result = fanout(*ssh_args(fleet), "-H", ",".join(fleet.hosts[:4]), "--container", name, "facts",
                        "python_version", "hostname")
        assert result.returncode == 0, result.stderr
        found = records(result)
        assert sorted(found) == sorted("%s -> %s" % (host, name) for host in fleet.hosts[:4])
        assert {tuple(r["value"]["python_version"][:2]) for r in found.values()} == {(3, 9)}
        missing = fanout(*ssh_args(fleet), "-H", fleet.hosts[0], "--container", container_names + "none", "facts")
        assert missing.returncode == 3 and "ContainerError: there is no container named" in missing.stdout
    finally:
        subprocess.run([podman, "rm", "--force", "--time", "0", name], capture_output=True)


@pytest.mark.parametrize("argv, message", [
    (["--transport", "docker", "--container", "app"], "--container is not for --transport docker"),
    (["--container", "app", "--workers", "2"], "--container is not for --workers"),
    (["--container=-app"], "is not a container name"),
])
def test_cli_container_bad_input_is_one_line(argv, message):
    """--container's bad combinations and names are one line, exit status 2."""
    from test_fanout import fanout
    result = fanout("-H", "a", *argv, "facts")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
