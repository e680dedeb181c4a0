"""OpenSSH configuration against the fleet's real sshd: ProxyCommand (a real subprocess carrying
the session), the global known_hosts file and HashKnownHosts."""

import os
import sys
import time

import pytest

import remote_helpers as rh
from chopsticks import ConnectError, ConnectTimeout, TunnelClosed, UnknownHostKey
from chopsticks.transports import known_hosts
from chopsticks.tunnel import SSHTunnel

FORWARDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "proxy_forwarder.py")


@pytest.fixture
def tunnels(no_leaks):
    """Collects tunnels made by a test and closes them before the leak check (which also finds
    a ProxyCommand left running)."""
    made = []

    def make(host, **kwargs):
        tunnel = SSHTunnel(host, agent=False, **kwargs)
        made.append(tunnel)
        return tunnel

    yield make
    for tunnel in made:
        tunnel.close()


def config(tmp_path, fleet, body, known=None):
    """An ssh_config whose last block reaches the fleet with its key and known_hosts."""
    path = tmp_path / "config"
    path.write_text(body + "\nHost *\n    Port %d\n    IdentityFile %s\n    UserKnownHostsFile %s\n" % (
        fleet.port, fleet.key, known or fleet.known_hosts))
    return str(path)


def proxy(host="%h", port="%p", stderr=None):
    """A ProxyCommand line running tests/proxy_forwarder.py (what ``nc %h %p`` does)."""
    return "ProxyCommand %s %s %s%s %s" % (sys.executable, FORWARDER, "--stderr '%s' " % stderr if stderr else "",
                                            host, port)


def test_proxy_command_carries_the_session(fleet, tunnels, tmp_path):
    """A host reached through a ProxyCommand (a TCP forwarder subprocess) works like any other,
    bulk bytes both ways included; it gets no extra direct session; closing ends the command."""
    path = config(tmp_path, fleet, "Host behind-proxy\n    HostName %s\n    %s\n" % (
        fleet.hosts[0], proxy(stderr="proxy starting")))
    tunnel = tunnels("behind-proxy", ssh_config=path)
    assert tunnel.destination.proxy_command.endswith("%s %d" % (fleet.hosts[0], fleet.port))
    assert tunnel.call(rh.add, 2, 3) == 5
    assert len(tunnel.call(rh.big_bytes, 3 * 1024 * 1024)) == 3 * 1024 * 1024
    assert tunnel.call(len, b"x" * (2 * 1024 * 1024)) == 2 * 1024 * 1024
    assert tunnel.bulk_login() is None  # its address is the command's, not a host's
    proxy_pid = tunnel._conn.pipe.link.under.proxy.proc.pid
    tunnel.close()
    assert not os.path.exists("/proc/%d" % proxy_pid)


def test_a_proxy_command_killed_mid_session_ends_the_tunnel(fleet, tunnels, tmp_path):
    """The ProxyCommand dies under a live tunnel: its next call fails with TunnelClosed at once
    (no keepalive wait, no hang), and the tunnel starts again (a new command) on its next use."""
    path = config(tmp_path, fleet, "Host behind-proxy\n    HostName %s\n    %s\n" % (fleet.hosts[0], proxy()))
    tunnel = tunnels("behind-proxy", ssh_config=path)
    assert tunnel.call(rh.add, 1, 1) == 2
    os.kill(tunnel._conn.pipe.link.under.proxy.proc.pid, 9)
    started = time.monotonic()
    with pytest.raises(TunnelClosed):
        tunnel.call(rh.add, 1, 1, timeout=30)
    assert time.monotonic() - started < 5
    assert tunnel.call(rh.add, 2, 2) == 4


def test_the_first_jump_hosts_proxy_command_runs(fleet, tunnels, tmp_path):
    """ProxyJump to a bastion whose own block has a ProxyCommand: the bastion is reached through
    the command, the target through the bastion."""
    path = config(tmp_path, fleet, "Host target\n    HostName %s\n    ProxyJump bastion\n"
                  "Host bastion\n    HostName %s\n    %s\n" % (fleet.hosts[1], fleet.hosts[2], proxy()))
    tunnel = tunnels("target", ssh_config=path)
    assert [hop.proxy_command is not None for hop in tunnel.destination.jumps] == [True]
    assert tunnel.call(rh.add, 1, 1) == 2


@pytest.mark.parametrize("command,said", [
    ("sh -c 'echo no route to %h >&2; exit 3'", "exited with status 3: no route to 127.0.0.2"),
    ("/nonexistent/chopsticks-proxy %h %p", "exited with status 127: "),
])
def test_a_proxy_command_that_exits_fails_at_once_with_its_stderr(fleet, tunnels, tmp_path, command, said):
    """A ProxyCommand that exits (or does not exist) is a ConnectError naming it, with its exit
    status and stderr, at once rather than at the connect deadline."""
    path = config(tmp_path, fleet, "Host h\n    HostName %s\n    ProxyCommand %s\n" % (fleet.hosts[0], command))
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        tunnels("h", ssh_config=path, connect_timeout=20).call(rh.add, 1, 1)
    assert time.monotonic() - started < 5
    assert not isinstance(info.value, ConnectTimeout)
    message = str(info.value)
    assert "through its ProxyCommand" in message and said in message, message
    if "nonexistent" in command:
        assert "not found" in message or "No such file" in message


def test_a_proxy_command_that_cannot_start(fleet, tunnels, tmp_path, monkeypatch):
    """A ProxyCommand whose shell ($SHELL, as OpenSSH) cannot be started is a ConnectError naming both."""
    path = config(tmp_path, fleet, "Host h\n    HostName %s\n    %s\n" % (fleet.hosts[0], proxy()))
    monkeypatch.setenv("SHELL", str(tmp_path / "no-such-shell"))
    with pytest.raises(ConnectError, match="cannot start ProxyCommand '.*' with .*no-such-shell: No such file"):
        tunnels("h", ssh_config=path, connect_timeout=10).call(rh.add, 1, 1)


def test_a_silent_proxy_command_hits_the_deadline(fleet, tunnels, tmp_path):
    """A ProxyCommand that never answers: ConnectTimeout at the tunnel's deadline, saying the
    command still runs; the command is killed (the leak check finds no child left)."""
    path = config(tmp_path, fleet, "Host h\n    HostName %s\n    ProxyCommand sleep 60\n" % fleet.hosts[0])
    started = time.monotonic()
    with pytest.raises(ConnectTimeout) as info:
        tunnels("h", ssh_config=path, connect_timeout=1.5).call(rh.add, 1, 1)
    assert time.monotonic() - started < 4
    assert "ProxyCommand 'sleep 60' is still running" in str(info.value)


def test_a_proxy_command_that_is_not_ssh(fleet, tunnels, tmp_path):
    """A ProxyCommand that prints something else than SSH is named as not an SSH server."""
    path = config(tmp_path, fleet, "Host h\n    ProxyCommand printf 'HTTP/1.0 400 Bad Request\\r\\n\\r\\n'\n")
    with pytest.raises(ConnectError, match="through its ProxyCommand\\) is not an SSH server: it sent 'HTTP/1.0"):
        tunnels("h", ssh_config=path, connect_timeout=10).call(rh.add, 1, 1)


def test_global_known_hosts_and_hashed_records(fleet, tunnels, tmp_path):
    """A host key found only in GlobalKnownHostsFile is known; with HashKnownHosts, accept-new
    records the host's name hashed, and that record is then enough for a strict login."""
    empty = tmp_path / "user_known_hosts"
    empty.write_text("")
    path = config(tmp_path, fleet, "Host global-*\n    HostName %s\n    GlobalKnownHostsFile %s\n"
                  "Host new-*\n    HostName %s\n    HashKnownHosts yes\n    StrictHostKeyChecking accept-new\n"
                  "Host strict-*\n    HostName %s\n" % (fleet.hosts[0], fleet.known_hosts, fleet.hosts[1],
                                                          fleet.hosts[1]), known=str(empty))
    assert tunnels("global-1", ssh_config=path).call(rh.add, 1, 1) == 2
    with pytest.raises(UnknownHostKey):
        tunnels("strict-1", ssh_config=path).call(rh.add, 1, 1)
    assert tunnels("new-1", ssh_config=path).call(rh.add, 1, 1) == 2
    recorded = empty.read_text()
    assert recorded.startswith("|1|") and fleet.hosts[1] not in recorded
    index = known_hosts.read([str(empty)])
    assert index[0].naming(known_hosts.host_name(fleet.hosts[1], fleet.port))
    assert tunnels("strict-2", ssh_config=path).call(rh.add, 2, 2) == 4
