"""Shared fixtures: real local tunnels, and a leak check after every test that uses them."""

import gc
import os

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
