"""SSH errors at the transport's boundary: libssh2's exceptions leave as chopsticks errors, and
close paths say what they ignored instead of swallowing it."""

import os
import sys

import gevent
import pytest
import structlog
from ssh2 import exceptions as ssh2_errors
from structlog.testing import capture_logs

import remote_helpers as rh
from chopsticks import ConnectError, TunnelClosed
from chopsticks.transports.libssh2 import translated
from chopsticks.transports.ssh_options import SSHOptions
from chopsticks.tunnel import SSHTunnel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
from fleet import Fleet  # noqa: E402


@pytest.fixture
def captured():
    """Library events captured for one test; structlog unconfigured again after it."""
    try:
        with capture_logs() as events:
            yield events
    finally:
        structlog.reset_defaults()


def test_an_ssh2_failure_while_connecting_is_a_connect_error(no_leaks):
    """A jump host whose sshd refuses forwarding makes libssh2 raise ChannelFailure: the caller gets
    a ConnectError naming the jump host, chained to libssh2's exception, not the foreign one."""
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("OpenSSH's sshd is not installed (scripts/install installs it)")
    with Fleet(1, extra_config="AllowTcpForwarding no\n") as fleet:
        options = SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="",
                             agent=False, jump="%s:%d" % (fleet.hosts[0], fleet.port))
        tunnel = SSHTunnel(fleet.hosts[0], options=options, connect_timeout=20)
        with pytest.raises(ConnectError) as info:
            tunnel.call(rh.add, 1, 1)
        tunnel.close()
    assert "asking jump host %s to connect to %s port %d failed: " % (fleet.hosts[0], fleet.hosts[0], fleet.port) \
        in str(info.value)
    assert type(info.value.__cause__).__module__.startswith("ssh2")


def test_the_error_names_the_step_that_failed():
    """translated() says which step failed and why, the connection's loss as such; no fixed word
    ("channel") for a step that was not one."""
    for exc, cause in [(ssh2_errors.ChannelFailure("refused"), "ChannelFailure: refused"),
                       (ssh2_errors.SocketRecvError(), "the SSH connection was lost (SocketRecvError)")]:
        with pytest.raises(ConnectError) as info:
            with translated("web-1", "checking the host key of web-1 port 22"):
                raise exc
        assert str(info.value) == "[web-1] checking the host key of web-1 port 22 failed: " + cause
        assert info.value.__cause__ is exc


def test_closing_a_lost_ssh_tunnel_logs_what_it_ignored(fleet, ssh_options, captured, no_leaks):
    """Releasing a tunnel whose sshd session was killed meets libssh2 errors (no exit status, no
    disconnect): each is a debug event with the host, not silence."""
    victim = SSHTunnel(fleet.hosts[0], options=ssh_options)
    try:
        assert victim.call(rh.add, 1, 1) == 2
        pending = victim.call_async(rh.sleep_and_return, 30, "never")
        gevent.sleep(0.2)
        assert fleet.kill_session_of(victim._conn.pipe.link.sock.getsockname()[1])
        with pytest.raises(TunnelClosed):
            pending.result(timeout=10)
    finally:
        victim.close()
    ignored = [event for event in captured if event["event"] == "ssh_close_failed"]
    assert ignored, captured
    assert all(event["host"] == fleet.hosts[0] and event["error"] for event in ignored)
