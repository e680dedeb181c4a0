"""Shared fixtures: real local tunnels, and a leak check after every test that uses them."""

import gc
import importlib
import os
import shutil
import subprocess
import sys
import textwrap

import gevent
import pytest
import structlog

from chopsticks.tunnel import Local


@pytest.fixture(scope="session", autouse=True)
def _warm_hub():
    """Create gevent's hub and child watcher once, so their fds are not counted as leaks."""
    with Local("warm-up") as tunnel:
        tunnel.call(os.getpid)


@pytest.fixture(autouse=True)
def _structlog_as_found():
    """A test that configured structlog (``structlog.testing.capture_logs`` does, and leaves it
    configured) leaves it unconfigured again: the library's output depends on it."""
    configured = structlog.is_configured()
    yield
    if not configured and structlog.is_configured():
        structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _no_system_ssh_files(monkeypatch, tmp_path_factory):
    """Tests never read the machine's /etc/ssh: the system ssh_config and global known_hosts
    point into an empty folder (a test that wants them writes its own there, or passes paths)."""
    from chopsticks.transports import ssh_config, ssh_options
    folder = tmp_path_factory.getbasetemp() / "no-etc-ssh"
    monkeypatch.setattr(ssh_config, "SYSTEM_CONFIG", str(folder / "ssh_config"))
    monkeypatch.setattr(ssh_options, "GLOBAL_KNOWN_HOSTS", (str(folder / "ssh_known_hosts"),))


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _children():
    return set(children_of(os.getpid(), zombies=False))


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


@pytest.fixture(scope="session")
def _hub_started():
    from chopsticks import hub
    return hub.shared()


@pytest.fixture
def hub_thread(_hub_started, no_leaks):
    """The process's hub thread (``chopsticks.hub``), started before the leak check counts;
    after the test, one round trip through it, so that the greenlets the test's work left
    there (handed work finishes just after it answers) have ended before the count."""
    from chopsticks import hub
    yield _hub_started
    hub.run(_hub_started, lambda: None)


# -- SSH: a real sshd on loopback, keys generated for this run -------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from fleet import Fleet, children_of  # noqa: E402

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


@pytest.fixture(params=["local", "ssh"])
def local_or_ssh(request):
    """Each test twice: with Local tunnels (None), and with the SSH fleet ((fleet, its SSH
    options), started before the leak check counts)."""
    if request.param == "ssh":
        return request.getfixturevalue("fleet"), request.getfixturevalue("ssh_options")
    return None


@pytest.fixture
def ssh_options(fleet):
    """SSH options that reach the fleet with its own key and known_hosts, ignoring ~/.ssh."""
    from chopsticks.transports.ssh_options import SSHOptions
    return SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="",
                      agent=False)


# -- a package that exists only on the controller (imports on demand) -----------------------

PACKAGE = {
    "demo_pkg/__init__.py": "from . import util\nVALUE = util.double(21)\n",
    "demo_pkg/util.py": "def double(x):\n    return 2 * x\n",
    "demo_pkg/sub/__init__.py": "",
    "demo_pkg/sub/deep.py": textwrap.dedent("""\
        import pkgutil
        from .. import util
        from ..util import double


        def where():
            import demo_pkg
            return __file__, type(__loader__).__name__, demo_pkg.VALUE, double(2)


        def data(name):
            return pkgutil.get_data("demo_pkg", name)


        def fail():
            marker = "the source line of a shipped module"
            raise KeyError(marker)
        """),
    "demo_pkg/data/info.txt": "package data\n",
}


@pytest.fixture
def demo_pkg(tmp_path, monkeypatch):
    """A package that exists only on the controller, in a temporary directory."""
    for rel, text in PACKAGE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "secret.txt").write_text("outside the package\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n.startswith("demo_pkg")]:
        del sys.modules[name]
    deep = importlib.import_module("demo_pkg.sub.deep")
    yield deep, tmp_path
    for name in [n for n in sys.modules if n.startswith("demo_pkg")]:
        del sys.modules[name]


# -- containers: rootful podman and three local images (scripts/containers builds them) -------

# Each supported remote Python, as an image: Debian bullseye, bookworm and trixie.
IMAGES = {"3.9": "chopsticks/python:3.9", "3.11": "chopsticks/python:3.11", "3.13": "chopsticks/python:3.13"}


def podman_containers(prefix):
    """Names of every container (running or not) whose name starts with ``prefix``."""
    out = subprocess.run(["podman", "ps", "--all", "--format", "{{.Names}}"], capture_output=True,
                         text=True, check=True).stdout
    return [name for name in out.split() if name.startswith(prefix)]


@pytest.fixture(scope="session")
def podman():
    """The engine's command, once podman and every image are there; fails in CI otherwise."""
    require(shutil.which("podman"), "podman is not installed (scripts/containers installs it)")
    missing = [image for image in IMAGES.values()
               if subprocess.run(["podman", "image", "exists", image]).returncode != 0]
    require(not missing, "images %s are missing (scripts/containers builds them)" % ", ".join(missing))
    return "podman"


@pytest.fixture
def container_names(podman, no_leaks):
    """A fresh name prefix for this test's containers; fails if any is left behind."""
    prefix = "ct-%s-" % os.urandom(3).hex()
    yield prefix
    left = podman_containers(prefix)
    for name in left:
        subprocess.run(["podman", "rm", "--force", name], capture_output=True)
    assert not left, "containers left behind: %s" % left
