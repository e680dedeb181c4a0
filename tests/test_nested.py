"""Remote code opens tunnels, as in the original: ``Local``, ``Sudo``, ``Docker`` and ``SSHTunnel``
created inside a remote call, with the API modules imported at the top of a task module
(``nested_tasks``) on remotes that have only the standard library. The controller opens them
through the remote's own tunnel and limits their depth."""

import re
import subprocess
import time

import pytest

import nested_tasks as nt
import remote_helpers as rh
from conftest import IMAGES, children_of
from chopsticks import RemoteException
from chopsticks.containers import Docker
from chopsticks.tunnel import Local, SSHTunnel


def test_a_remote_opens_a_local_tunnel_and_calls_through_it(local):
    """Remote code opens a Local tunnel: its agent is the remote's child, and no gevent is shipped."""
    outer, inner = local.call(nt.nested_local)
    assert outer[0] == local.call(rh.getpid)
    assert inner[1] == outer[0]  # the grandchild is the remote's own child
    assert local.call(rh.modules_loaded).count("gevent") == 0  # no gevent came along


def test_the_packages_own_names_import_on_a_remote(local):
    """``from chopsticks import Local, Group, SSHTunnel ...`` on a remote gives the stand-ins."""
    assert local.call(nt.top_level_names) == ["chopsticks.agent.nested", "chopsticks.agent.nested", True,
                                              "chopsticks.errors", "chopsticks.results"]


def test_the_depth_limit_stops_recursion_as_in_the_original(no_leaks):
    """Endless recursion stops at the depth limit with the original's message; the tunnel goes on."""
    with Local() as tun:
        with pytest.raises(RemoteException) as info:
            tun.call(nt.recursive)
        assert re.search(r".*DepthLimitExceeded: Depth limit of 2 exceeded at localhost -> localhost -> localhost",
                         str(info.value))
        assert tun.call(rh.add, 1, 1) == 2


def test_errors_groups_and_queues_on_a_remote(local):
    """On a remote: a nested call's RemoteException, a Group's results and a Queue's values and callbacks."""
    assert local.call(nt.nested_error) == ("builtins.ValueError", "invalid literal for int() with base 10: 'x'"
                                           .replace("'x'", "'not a number'"))
    names, distinct, first, seen, shown = local.call(nt.nested_group_and_queue)
    assert names == ["g1", "g2"] and distinct == 2
    assert first == 1024 and seen == ["ErrorResult"]
    assert shown == "Group([Local('g1'), Local('g2')])"


def test_tunnels_a_remote_opened_close_with_it(no_leaks):
    """A tunnel remote code left open ends when the remote's own tunnel closes."""
    outer = Local("outer")
    try:
        pid = outer.call(rh.getpid)
        outer.call(rh.sleep_and_return, 0, 0)
        # a call that opens a tunnel and leaves it open: the controller closes it with the outer one
        outer.call(nt.leave_open)
        assert len(children_of(pid, zombies=False)) == 1
    finally:
        outer.close()
    deadline = time.monotonic() + 10
    while children_of(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert children_of(pid) == []


@pytest.mark.parametrize("version", sorted(IMAGES))
def test_code_in_a_container_of_each_image_opens_a_local_tunnel(version, podman, container_names):
    """The API modules import under each remote Python (3.9 the oldest) with the stdlib alone."""
    tunnel = Docker(container_names + version.replace(".", ""), image=IMAGES[version], engine=podman)
    try:
        outer, inner = tunnel.call(nt.nested_local)
        assert outer[3] == inner[3] == [int(part) for part in version.split(".")]
        assert inner[1] == outer[0]
    finally:
        tunnel.close()


def test_a_remote_opens_a_container_of_each_image(local, podman, container_names):
    """Remote code starts a container of each image, and none is left behind."""
    for version in sorted(IMAGES):
        name = container_names + "n" + version.replace(".", "")
        assert local.call(nt.nested_docker, name, IMAGES[version])[3] == [int(p) for p in version.split(".")]
    assert not subprocess.run([podman, "ps", "-aq", "--filter", "name=" + container_names],
                              capture_output=True, text=True).stdout.strip()


def test_code_on_an_ssh_host_opens_sudo_and_ssh_tunnels(fleet, ssh_options, test_user, no_leaks):
    """Code on an SSH host opens a sudo tunnel there and an SSH tunnel to another host."""
    user, _ = test_user
    host = SSHTunnel(fleet.hosts[0], options=ssh_options)
    try:
        assert host.call(nt.nested_sudo, user)[2] == user
        far = host.call(nt.nested_ssh, fleet.hosts[1], port=fleet.port, key=fleet.key,
                        known_hosts=fleet.known_hosts, ssh_config="")
        assert far[2] == host.call(nt.whoami)[2]
    finally:
        host.close()
