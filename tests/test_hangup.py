"""Hang-up: when the controller goes away, nothing the agent started keeps running on the host."""

import os
import signal
import subprocess
import sys
import textwrap

import gevent.select
from chopsticks.helpers import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Generous: the machine is shared. The agent itself gives its commands 1 s after SIGTERM.
GONE_WITHIN = 20.0


def background_command(fifo):
    """A shell that starts a grandchild, reports its pid through ``fifo``, and waits for it."""
    return "sleep 300 & echo $! > %s; wait" % fifo


def open_fifo(tmp_path):
    path = str(tmp_path / "pid.fifo")
    os.mkfifo(path)
    return path, os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def read_pid(fd, timeout=30.0):
    """The pid the remote command writes into the FIFO (waits on the fd, not a sleep)."""
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = gevent.select.select([fd], [], [], timeout)
        assert ready, "the command did not report its grandchild's pid within %ss" % timeout
        data += os.read(fd, 64)
    return int(data)


def wait_gone(pid, timeout=GONE_WITHIN):
    """True once ``pid`` has exited (its pidfd becomes readable), False after ``timeout``."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = gevent.select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def kill_if_alive(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_closing_the_tunnel_kills_a_running_commands_grandchild(local, tmp_path):
    """A tunnel closed mid-command: the agent kills the command's group, background grandchild included."""
    fifo, fd = open_fifo(tmp_path)
    try:
        local.call_async(run, background_command(fifo))
        grandchild = read_pid(fd)
        try:
            local.close()
            assert wait_gone(grandchild), "the command's background grandchild outlived the agent"
        finally:
            kill_if_alive(grandchild)
    finally:
        os.close(fd)


CONTROLLER = textwrap.dedent("""\
    import sys
    from chopsticks.helpers import run
    from chopsticks.tunnel import Local
    tunnel = Local("victim").connect()
    print(tunnel.remote_info["pid"], flush=True)
    tunnel.call(run, sys.argv[1])
    """)


def test_a_killed_controller_leaves_nothing_running_on_the_host(tmp_path, no_leaks):
    """SIGKILL the controller mid-command: its agent and the command's grandchild are gone soon after."""
    fifo, fd = open_fifo(tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT)
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER, background_command(fifo)],
                                  stdout=subprocess.PIPE, env=env, cwd=str(tmp_path))
    grandchild = agent = None
    try:
        grandchild = read_pid(fd)
        agent = int(controller.stdout.readline())
        controller.kill()
        controller.wait()
        assert wait_gone(grandchild), "the command's background grandchild outlived its controller"
        assert wait_gone(agent), "the agent outlived its controller"
    finally:
        os.close(fd)
        controller.kill()
        controller.wait()
        controller.stdout.close()
        for pid in (grandchild, agent):
            if pid is not None:
                kill_if_alive(pid)
