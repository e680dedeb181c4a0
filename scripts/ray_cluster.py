"""A real multi-node Ray cluster on loopback: a head node and more nodes, each a ``ray start``.

Used by the tests (tests/test_ray_shards.py) and the benchmarks (bench/ray_shards.py). Each
node is ``ray start --block`` in a temporary directory of its own, with its own loopback
address (127.0.100.1 for the head, .2, .3 ... for the others: Ray turns 127.0.0.1 itself into
the machine's interface address, so the nodes are given other 127.x addresses), no
dashboard, no usage stats, and token authentication off (``RAY_AUTH_MODE=disabled``: Ray
2.60 turns it on by default and writes ``~/.ray/auth_token``). ``--block`` keeps each node's
``ray start`` in the foreground: stopping that one process (by its PID) stops the node's
raylet and workers, and it gets SIGTERM when whoever started it dies.

A driver joins with ``ray.init(address=cluster.address, _node_ip_address=HEAD_IP)`` under
``cluster.env()``.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fleet import _die_with_parent, children_of, free_port  # noqa: E402

HEAD_IP = "127.0.100.1"
READY = "Ray runtime started."


def ray_command() -> List[str]:
    """The ``ray`` CLI of this interpreter's environment."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    return [beside if os.path.exists(beside) else shutil.which("ray") or "ray"]


def ray_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment a node or a test driver runs in: no telemetry, no token files."""
    env = dict(os.environ if base is None else base)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return env


def descendants(pid: int) -> List[int]:
    """PIDs of ``pid``'s children, their children, and so on."""
    found, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


class Node:
    """One ``ray start --block``: its process, directory, address and log."""

    def __init__(self, ip: str, workdir: str, proc: subprocess.Popen, log: str):
        self.ip = ip
        self.dir = workdir
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self, name: str) -> List[int]:
        """PIDs of this node's processes whose command name starts with ``name`` (e.g. raylet)."""
        found = []
        for pid in children_of(self.proc.pid):
            try:
                with open("/proc/%d/comm" % pid) as comm:
                    if comm.read().strip().startswith(name):
                        found.append(pid)
            except OSError:
                pass
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the node: ``ray start --block`` stops its raylet and workers on SIGTERM;
        whatever of them is left after ``timeout`` (workers run in process groups of their
        own) is killed by PID."""
        if self.proc.poll() is None:
            below = descendants(self.proc.pid)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for pid in below:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class RayCluster:
    """A head node and ``nodes - 1`` more on loopback, ``cpus`` CPUs each; context manager."""

    def __init__(self, nodes: int = 2, cpus: int = 1):
        self.count = nodes
        self.cpus = cpus
        self.dir = tempfile.mkdtemp(prefix="chopsticks-ray-")
        self.port = 0
        self.nodes: List[Node] = []
        self.start_seconds = 0.0

    @property
    def address(self) -> str:
        return "%s:%d" % (HEAD_IP, self.port)

    def env(self) -> Dict[str, str]:
        return ray_env()

    def _start_node(self, index: int, args: List[str], timeout: float) -> Node:
        ip = "127.0.100.%d" % (index + 1)
        workdir = tempfile.mkdtemp(prefix="n%d-" % index, dir=self.dir)
        log = os.path.join(workdir, "start.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ray_command() + ["start", "--block", "--node-ip-address=" + ip, "--temp-dir=" + workdir,
                                 "--num-cpus=%d" % self.cpus, "--disable-usage-stats"] + args,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                preexec_fn=_die_with_parent)
        node = Node(ip, workdir, proc, log)
        if index < len(self.nodes):
            self.nodes[index] = node
        else:
            self.nodes.append(node)
        ends = time.monotonic() + timeout
        while True:
            with open(log, errors="replace") as text:
                if READY in text.read():
                    return node
            if proc.poll() is not None or time.monotonic() > ends:
                raise RuntimeError("ray node %s did not start:\n%s" % (ip, open(log, errors="replace").read()[-3000:]))
            time.sleep(0.1)  # polling a log for a line, not synchronising a test

    def start(self, timeout: float = 60.0) -> "RayCluster":
        began = time.monotonic()
        self.port = free_port()
        try:
            self._start_node(0, ["--head", "--port=%d" % self.port, "--include-dashboard=false"], timeout)
            for index in range(1, self.count):
                self._start_node(index, ["--address=" + self.address], timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def restart_node(self, index: int, timeout: float = 60.0) -> Node:
        """Node ``index`` (not the head) started again, after a test stopped it."""
        self.nodes[index].stop()
        return self._start_node(index, ["--address=" + self.address], timeout)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RayCluster":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


if __name__ == "__main__":
    with RayCluster() as cluster:
        print("address %s, started in %.2f s" % (cluster.address, cluster.start_seconds), flush=True)
        began = time.monotonic()
    print("stopped in %.2f s" % (time.monotonic() - began))
