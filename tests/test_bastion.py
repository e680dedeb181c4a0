"""Jump hosts shared by every tunnel through them: one login, its lifetime, its death."""

import dataclasses
import gc

import gevent
import pytest

from chopsticks import Group, SSHTunnel
from chopsticks.errors import ConnectError, TunnelClosed
from chopsticks.transports.ssh_jump import default_bastions
from chopsticks.transports.ssh_options import SSHOptions
from scripts.fleet import Fleet, connections_to

import remote_helpers as rh

FAR_HOSTS = 200


@pytest.fixture(scope="module")
def wide_fleet(fleet):
    """One sshd serving a bastion and FAR_HOSTS far hosts (127.0.0.2 is the bastion)."""
    with Fleet(FAR_HOSTS + 1) as running:
        yield running


def options_for(fleet, jump) -> SSHOptions:
    return SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="",
                      agent=False, jump=jump)


def bastion_port(tunnel) -> int:
    """The local port of the connection to the bastion a tunnel runs through."""
    return tunnel._conn.pipe.link.parent.link.sock.getsockname()[1]


def test_two_hundred_hosts_share_one_bastion_login(wide_fleet):
    """200 tunnels through one jump host, connected at once, make one login to it, and its last
    user closing closes it."""
    bastion, far = wide_fleet.hosts[0], wide_fleet.hosts[1:]
    group = Group(far, options=options_for(wide_fleet, "%s:%d" % (bastion, wide_fleet.port)))
    try:
        assert group.call(rh.add, 1, 2).raise_failures() == {host: 3 for host in far}
        assert connections_to(bastion, wide_fleet.port) == 1
        assert len({id(t._conn.pipe.link.parent) for t in group.tunnels}) == 1
    finally:
        group.close()
    assert connections_to(bastion, wide_fleet.port) == 0
    assert len(default_bastions()) == 0


def test_last_tunnel_closes_the_bastion(fleet, ssh_options):
    """The bastion session stays while any tunnel uses it and closes with the last one."""
    jump = "%s:%d" % (fleet.hosts[1], fleet.port)
    options = dataclasses.replace(ssh_options, jump=jump)
    first, second = SSHTunnel(fleet.hosts[2], options=options), SSHTunnel(fleet.hosts[3], options=options)
    try:
        assert first.call(rh.add, 1, 1) == 2 and second.call(rh.add, 2, 2) == 4
        assert connections_to(fleet.hosts[1], fleet.port) == 1
        first.close()
        assert connections_to(fleet.hosts[1], fleet.port) == 1
        assert second.call(rh.add, 3, 3) == 6
    finally:
        first.close()
        second.close()
    assert connections_to(fleet.hosts[1], fleet.port) == 0


def test_concurrent_first_connects_log_in_once(fleet, ssh_options):
    """Tunnels that connect at once through a bastion not yet open wait for one login to it."""
    options = dataclasses.replace(ssh_options, jump="%s:%d" % (fleet.hosts[4], fleet.port))
    tunnels = [SSHTunnel(fleet.hosts[i % 3], options=options) for i in range(20)]
    try:
        gevent.joinall([gevent.spawn(t.connect) for t in tunnels], raise_error=True)
        assert len({id(t._conn.pipe.link.parent) for t in tunnels}) == 1
        assert connections_to(fleet.hosts[4], fleet.port) == 1
    finally:
        for tunnel in tunnels:
            tunnel.close()


def test_killed_bastion_fails_every_tunnel_naming_it(fleet, ssh_options):
    """Killing the bastion's sshd session ends every tunnel through it with an error that
    names the jump host, and the next connect logs in afresh."""
    jump_host = fleet.hosts[5]
    options = dataclasses.replace(ssh_options, jump="%s:%d" % (jump_host, fleet.port))
    tunnels = [SSHTunnel(fleet.hosts[i], options=options) for i in range(4)]
    try:
        for tunnel in tunnels:
            assert tunnel.call(rh.add, 1, 1) == 2
        pending = [tunnel.call_async(rh.sleep_and_return, 30, "never") for tunnel in tunnels]
        assert fleet.kill_session_of(bastion_port(tunnels[0]))
        for call in pending:
            with pytest.raises(TunnelClosed) as caught:
                call.result(timeout=20)
            assert "the connection to jump host %s port %d was lost" % (jump_host, fleet.port) in str(caught.value)
        again = SSHTunnel(fleet.hosts[0], options=options)
        try:
            assert again.call(rh.add, 2, 2) == 4
        finally:
            again.close()
    finally:
        for tunnel in tunnels:
            tunnel.close()


def test_chains_share_every_hop(fleet, ssh_options):
    """Tunnels through the same chain of two jump hosts share both sessions: one login to the first."""
    chain = ["%s:%d" % (fleet.hosts[1], fleet.port), "%s:%d" % (fleet.hosts[2], fleet.port)]
    options = dataclasses.replace(ssh_options, jump=chain)
    tunnels = [SSHTunnel(fleet.hosts[i], options=options) for i in (3, 4, 5)]
    try:
        for tunnel in tunnels:
            assert tunnel.call(rh.add, 1, 1) == 2
        assert len({id(t._conn.pipe.link.parent) for t in tunnels}) == 1
        assert connections_to(fleet.hosts[1], fleet.port) == 1
    finally:
        for tunnel in tunnels:
            tunnel.close()
    assert connections_to(fleet.hosts[1], fleet.port) == 0


def test_unreachable_bastion_fails_every_waiting_tunnel_once(fleet, ssh_options):
    """A jump host that refuses connections fails every tunnel waiting on its login with a
    ConnectError naming it."""
    options = dataclasses.replace(ssh_options, jump="%s:1" % fleet.hosts[1], connect_timeout=5)
    tunnels = [SSHTunnel(fleet.hosts[i], options=options) for i in range(3)]
    results = [gevent.spawn(t.connect) for t in tunnels]
    gevent.joinall(results)
    for result in results:
        assert isinstance(result.exception, ConnectError)
        assert "cannot connect to %s port 1" % fleet.hosts[1] in str(result.exception)


def test_a_closed_bastion_leaves_nothing_to_write_into_the_next_connection(wide_fleet):
    """Once its last tunnel closes, nothing of a bastion's session outlives its socket: the
    connections that reuse its descriptor numbers (the next bastion's too) keep working
    through a garbage collection."""
    far = wide_fleet.hosts[1:61]
    jumped = options_for(wide_fleet, "%s:%d" % (wide_fleet.hosts[0], wide_fleet.port))
    for options in (jumped, options_for(wide_fleet, None), jumped):
        with Group(far, options=options) as group:
            group.call(rh.add, 1, 1).raise_failures()
            gc.collect()
            assert group.call(rh.add, 2, 2).raise_failures() == {host: 4 for host in far}


def test_each_hub_logs_in_to_a_jump_host_of_its_own(fleet, ssh_options, hub_thread):
    """A jump host used by a tunnel of the main thread's hub and by one of the hub thread's
    (awaited from asyncio): each hub has its own login to it (a bastion's session is driven
    by a greenlet of its hub), both tunnels work, and closing them closes both logins."""
    import asyncio

    jump = "%s:%d" % (fleet.hosts[1], fleet.port)
    options = dataclasses.replace(ssh_options, jump=jump)
    here, there = SSHTunnel(fleet.hosts[2], options=options), SSHTunnel(fleet.hosts[3], options=options)
    try:
        assert here.call(rh.add, 1, 1) == 2
        assert asyncio.run(asyncio.wait_for(there.acall(rh.add, 2, 2), 60)) == 4
        assert connections_to(fleet.hosts[1], fleet.port) == 2
        assert here.call(rh.add, 3, 3) == 6 and there.call(rh.add, 4, 4) == 8
    finally:
        here.close()
        there.close()
    assert connections_to(fleet.hosts[1], fleet.port) == 0
