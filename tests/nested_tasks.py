"""Task modules as users of the original write them: the API imported at the top. These run on
remotes, where ``chopsticks.tunnel``, ``.group``, ``.queue`` and ``.containers`` import with the
standard library alone (``agent.nested``); never imported by the tests themselves for their own use."""

import os
import sys

from chopsticks.containers import Docker
from chopsticks.group import Group
from chopsticks.queue import Queue
from chopsticks.tunnel import Local, RemoteException, SSHTunnel, Sudo  # noqa: F401


def whoami():
    import pwd
    return os.getpid(), os.getppid(), pwd.getpwuid(os.getuid()).pw_name, list(sys.version_info[:2])


def nested_local(python=None):
    """This agent, and the agent of a Local it opens."""
    options = {"python": python} if python else {}
    with Local(**options) as tun:
        return whoami(), tun.call(whoami)


def nested_docker(name, image):
    with Docker(name, image=image) as tun:
        return tun.call(whoami)


def nested_sudo(user):
    with Sudo(user) as tun:
        return tun.call(whoami)


def nested_ssh(host, **options):
    with SSHTunnel(host, **options) as tun:
        return tun.call(whoami)


def recursive():
    """Infinite recursion, which the depth limit stops (the original's test)."""
    with Local() as tun:
        tun.call(recursive)


def nested_error():
    with Local() as tun:
        try:
            tun.call(int, "not a number")
        except RemoteException as exc:
            return exc.remote_type, exc.remote_message


def nested_group_and_queue():
    group = Group([Local("g1"), Local("g2")])
    try:
        called = dict(group.call(os.getpid))
        queue = Queue()
        seen = []
        first = queue.call(group.tunnels[0], pow, 2, 10)
        queue.call(group.tunnels[1], int, "x").with_callback(lambda value: seen.append(type(value).__name__))
        queue.run()
        return sorted(called), len(set(called.values())), first.value, seen, repr(group)
    finally:
        group.close()


_KEPT = []


def leave_open():
    """Opens a tunnel and never closes it: it goes when this remote's own tunnel does."""
    tun = Local("left-open")
    _KEPT.append(tun)
    return tun.call(os.getpid)


def top_level_names():
    """The package's own names on a remote: the remote-safe stand-ins."""
    from chopsticks import DepthLimitExceeded, Group as G, GroupResult, Local as L, SSHTunnel as S, Tunnel as T  # noqa
    return [L.__module__, G.__module__, S is T, DepthLimitExceeded.__module__, GroupResult.__module__]
