"""Shared fixtures: real local tunnels, and a leak check after every test that uses them."""

import gc
import os
import shutil
import subprocess
import sys

import gevent
import pytest

from chopsticks.tunnel import Local


@pytest.fixture(scope="session", autouse=True)
def _warm_hub():
    """Create gevent's hub and child watcher once, so their fds are not counted as leaks."""
    with Local("warm-up") as tunnel:
        tunnel.call(os.getpid)


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _children():
    mine = str(os.getpid())
    kids = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == mine and fields[0] != "Z":
                kids.add(pid)
    return kids


def _live_greenlets():
    return [g for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and not g.dead]


@pytest.fixture
def no_leaks():
    """Fails the test if it leaves an fd, a child process or a greenlet behind."""
    gc.collect()
    fds, kids, greenlets = _open_fds(), _children(), len(_live_greenlets())
    yield
    gevent.sleep(0)
    gc.collect()
    leaked_fds = _open_fds() - fds
    # an fd listed while listing /proc/self/fd itself is not a leak
    leaked_fds = {fd for fd in leaked_fds if os.path.exists("/proc/self/fd/" + fd)}
    assert not leaked_fds, "leaked fds: %s" % {fd: os.readlink("/proc/self/fd/" + fd) for fd in leaked_fds}
    assert _children() - kids == set(), "leaked child processes"
    assert len(_live_greenlets()) <= greenlets, "leaked greenlets: %r" % _live_greenlets()


@pytest.fixture
def local(no_leaks):
    """A connected Local tunnel, closed (and leak-checked) after the test."""
    tunnel = Local("local-test")
    try:
        yield tunnel
    finally:
        tunnel.close()


# -- SSH: a real sshd on loopback, keys generated for this run -------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from fleet import Fleet  # noqa: E402

TEST_USER = "chopsticks-test"
TEST_PASSWORD = "pw-" + os.urandom(6).hex()


def require(condition, reason):
    """Skip when a prerequisite is missing, but fail in CI, where nothing may be skipped."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail("missing prerequisite in CI: " + reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def test_user():
    """A throwaway local user with a password (for password and sudo tests); needs root."""
    require(os.getuid() == 0 and shutil.which("useradd"), "creating a test user needs root and useradd")
    subprocess.run(["userdel", "-r", TEST_USER], capture_output=True)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True)
    subprocess.run(["chpasswd"], input="%s:%s" % (TEST_USER, TEST_PASSWORD), text=True, check=True)
    yield TEST_USER, TEST_PASSWORD
    subprocess.run(["userdel", "-r", TEST_USER], capture_output=True)


@pytest.fixture(scope="session")
def fleet(request):
    """Six SSH hosts (127.0.0.2-7) served by one sshd started for this test session."""
    require(os.path.exists("/usr/sbin/sshd"), "OpenSSH's sshd is not installed (scripts/install installs it)")
    users = []
    if os.getuid() == 0 and shutil.which("useradd"):
        users = [TEST_USER]
    with Fleet(6, users=users) as running:
        yield running


@pytest.fixture
def ssh_options(fleet):
    """SSH options that reach the fleet with its own key and known_hosts, ignoring ~/.ssh."""
    from chopsticks.transports.ssh_options import SSHOptions
    return SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="",
                      agent=False)
