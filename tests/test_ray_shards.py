"""Shards as Ray actors, on a real 2-node Ray cluster on loopback, over the loopback sshd fleet."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import gevent
import pytest

from chopsticks import ClusterError, Group, ShardLost
from chopsticks.results import ErrorResult
import remote_helpers
from conftest import ROOT, require

from ray_cluster import HEAD_IP, RayCluster, ray_env  # noqa: E402  (scripts/ is on sys.path: conftest)

# Long enough for Ray to notice a stopped node or a dead driver on a loaded 2-core machine.
WITHIN = 90.0


@pytest.fixture(scope="module")
def started_cluster():
    """A head node and a second node, one CPU each, joined by this process as its driver."""
    try:
        import ray
    except ImportError:
        require(False, "Ray is not installed (scripts/install installs requirements-ray.txt)")
    saved = dict(os.environ)
    os.environ.update(ray_env())
    with RayCluster(nodes=2, cpus=1) as cluster:
        ray.init(address=cluster.address, _node_ip_address=HEAD_IP, log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def ray_cluster(started_cluster):
    """The cluster, once the driver sees both nodes alive with their CPUs (a node's ``ray
    start`` says it started before the head has its resources; a test may restart a node)."""
    import ray
    wait_until(lambda: ray.cluster_resources().get("CPU") == 2 and
               sum(node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]) == 2,
               "both nodes to join")
    return started_cluster


def nodes_of(group):
    """Each host's node, as the driver knows its shard (the actor reports its pid and node)."""
    driver = group._driver
    return {host: driver.shards[index][0].node for host, index in driver.placed.items()}


def wait_until(condition, what):
    """Poll ``condition`` in the hub (the driver's readers hand it their messages) until true."""
    ends = time.monotonic() + WITHIN
    while not condition():
        assert time.monotonic() < ends, "timed out waiting for " + what
        gevent.sleep(0.05)


def test_results_come_from_actors_on_both_nodes(ray_cluster, fleet, ssh_options):
    """A call through Group(cluster=) runs one shard per cluster CPU, one on each node, and
    every host's result comes back."""
    group = Group(fleet.hosts, cluster=ray_cluster.address, options=ssh_options)
    try:
        result = group.call(os.getpid)
        assert result.ok and len(result) == len(fleet.hosts)
        where = nodes_of(group)
        assert set(where.values()) == {"127.0.100.1", "127.0.100.2"}, (where, group._driver.workers, [
            (entry[0].label if entry else None) for entry in group._driver.shards])
        assert len({group._driver.shards[i][0].pid for i in range(group._driver.workers)}) == 2
    finally:
        group.close()


def test_a_second_call_is_warm(ray_cluster, fleet, ssh_options):
    """Tunnels stay open in their actor between fan-outs: each host answers from the same
    remote agent twice, and results stream back as hosts finish."""
    group = Group(fleet.hosts, cluster=ray_cluster.address, options=ssh_options)
    try:
        first = dict(group.iter_call(os.getpid))
        second = dict(group.iter_call(os.getpid))
        assert first == second and not any(isinstance(v, ErrorResult) for v in first.values())
    finally:
        group.close()


def test_code_only_the_driver_has_is_served(ray_cluster, fleet, ssh_options, demo_pkg):
    """A function from a package only the driver can import runs on every host: the actors ask
    the driver's import service."""
    deep, _ = demo_pkg
    group = Group(fleet.hosts, cluster=ray_cluster.address, options=ssh_options)
    try:
        result = group.call(deep.where).raise_failures()
        assert {value[2] for value in result.values()} == {42}
    finally:
        group.close()


def test_files_through_a_cluster_are_refused_unless_their_bytes_travel(ray_cluster, fleet, ssh_options, tmp_path):
    """A put from a path or a fetch would use each node's own disk, not this machine's:
    ClusterError before any host is asked; a put from a file object carries its bytes."""
    source = tmp_path / "payload"
    source.write_bytes(b"through the cluster\n")
    group = Group(fleet.hosts[:2], cluster=ray_cluster.address, options=ssh_options)
    try:
        with pytest.raises(ClusterError, match="use workers="):
            group.put(str(source), str(tmp_path / "put-{host}"))
        with pytest.raises(ClusterError, match="use workers="):
            group.fetch(str(source), str(tmp_path / "back-{host}"))
        assert not list(tmp_path.glob("put-*")) and not list(tmp_path.glob("back-*"))
        with open(source, "rb") as f:
            assert group.put(f, str(tmp_path / "fobj-{host}")).ok
        assert (tmp_path / ("fobj-%s" % fleet.hosts[0])).read_bytes() == source.read_bytes()
    finally:
        group.close()


def test_unreadable_ssh_files_are_one_error_per_node(ray_cluster, fleet, ssh_options, tmp_path):
    """A key no node can read is one ClusterError naming each node once, not one per host."""
    import dataclasses
    missing = str(tmp_path / "no-such-key")
    group = Group(fleet.hosts, cluster=ray_cluster.address, options=dataclasses.replace(ssh_options, key=missing))
    try:
        with pytest.raises(ClusterError) as caught:
            group.call(os.getpid)
        lines = str(caught.value).splitlines()[1:]
        assert sorted(line.split()[1] for line in lines) == ["127.0.100.1", "127.0.100.2"]
        assert all(missing in line for line in lines)
    finally:
        group.close()


def test_without_ray_a_cluster_names_the_extra():
    """Asking for a cluster where Ray is not installed is one clear error naming the extra."""
    code = textwrap.dedent("""\
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import chopsticks
        try:
            chopsticks.Group(["h1"], cluster="127.0.0.1:1")
        except chopsticks.MissingExtra as exc:
            assert isinstance(exc, ImportError)
            print(exc)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "pip install chopsticks[ray]" in out.stdout


def test_the_cli_runs_on_the_cluster_ray_address_names(ray_cluster, fleet):
    """``--cluster auto`` joins the cluster ``RAY_ADDRESS`` names; every host's command runs,
    in the usual output, with exit status 0 and nothing of Ray's on stderr."""
    import json
    env = dict(os.environ, PYTHONPATH=ROOT, RAY_ADDRESS=ray_cluster.address)
    out = subprocess.run([sys.executable, "-m", "chopsticks.fanout", "--cluster", "auto", "-H", ",".join(fleet.hosts),
                          "-p", str(fleet.port), "-i", fleet.key, "--known-hosts", fleet.known_hosts, "-F", "",
                          "--no-agent", "--format", "jsonl", "--no-progress", "run", "echo", "hi"],
                         env=env, capture_output=True, text=True, timeout=WITHIN)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(line["host"] for line in lines) == sorted(fleet.hosts)
    assert all(line["value"]["stdout"] == "hi\n" for line in lines)
    assert "Ray" not in out.stderr, out.stderr


DRIVER = """\
import os, sys
import ray
from chopsticks import Group, SSHOptions
ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], log_to_driver=False)
options = SSHOptions(port=int(sys.argv[3]), key=sys.argv[4], known_hosts=sys.argv[5], ssh_config="", agent=False)
group = Group(sys.argv[6:], cluster=sys.argv[1], options=options)
group.call(os.getpid).raise_failures()
print(" ".join(str(handle.pid) for handle, _ in group._driver.shards), flush=True)
sys.stdin.read()  # until killed
"""


def test_a_dead_driver_leaves_no_actors(ray_cluster, fleet, tmp_path):
    """A driver killed with SIGKILL leaves none of its shard actors' processes behind."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), ray_cluster.address, HEAD_IP, str(fleet.port),
                               fleet.key, fleet.known_hosts] + fleet.hosts, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        pids = [int(pid) for pid in driver.stdout.readline().split()]
        assert len(pids) == 2 and all(os.path.exists("/proc/%d" % pid) for pid in pids)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        driver.stdin.close()
        driver.stdout.close()
    wait_until(lambda: not any(os.path.exists("/proc/%d" % pid) for pid in pids), "the actors to end")


def stop_node(node):
    node.stop()  # ray stop, for that node alone: its ray start --block stops raylet and workers


def kill_node(node):
    node.stop(signal.SIGKILL)  # as a machine that goes dark: every process of the node SIGKILLed
    # (the raylet alone is not enough: its workers outlive it a while and may still finish)


@pytest.mark.parametrize("fault", [stop_node, kill_node], ids=["node_stopped", "node_killed"])
def test_a_lost_node_fails_only_its_hosts(ray_cluster, fleet, ssh_options, tmp_path, fault):
    """A node stopped, or all its processes killed, mid-fan-out: its hosts get ShardLost
    naming the node, the other node's hosts finish, nothing hangs; the next fan-out starts a
    new shard for them."""
    group = Group(fleet.hosts, cluster=ray_cluster.address, options=ssh_options)
    release, started = str(tmp_path / "release"), tmp_path / "started"
    started.mkdir()
    try:
        group.call(os.getpid).raise_failures()
        where = nodes_of(group)
        running = gevent.spawn(lambda: dict(group.iter_call(remote_helpers.wait_for_file, release, 120, str(started))))
        wait_until(lambda: len(os.listdir(started)) == len(fleet.hosts), "every host to start")
        fault(ray_cluster.nodes[1])
        open(release, "w").close()
        results = running.get(timeout=WITHIN)
        for host, value in results.items():
            if where[host] == "127.0.100.2":
                assert isinstance(value, ErrorResult) and isinstance(value.exception, ShardLost), value
                assert "127.0.100.2" in str(value.exception) and "shard" in str(value.exception)
            else:
                assert isinstance(value, int), value
        import ray
        wait_until(lambda: not any(node["Alive"] for node in ray.nodes()
                                   if node["NodeManagerAddress"] == "127.0.100.2"), "Ray to see the node gone")
        assert group.call(os.getpid).ok  # a new shard, on the node that is left
    finally:
        group.close()
        ray_cluster.restart_node(1)


def test_closing_the_group_mid_fan_out_ends_it(ray_cluster, fleet, ssh_options, tmp_path):
    """Group.close() while every host still runs ends the fan-out at once: each host a
    ShardLost saying its shard was closed; nothing hangs."""
    group = Group(fleet.hosts, cluster=ray_cluster.address, options=ssh_options)
    release, started = str(tmp_path / "release"), tmp_path / "started"
    started.mkdir()
    try:
        running = gevent.spawn(lambda: dict(group.iter_call(remote_helpers.wait_for_file, release, 120, str(started))))
        wait_until(lambda: len(os.listdir(started)) == len(fleet.hosts), "every host to start")
        group.close()
        results = running.get(timeout=WITHIN)
        assert sorted(results) == sorted(fleet.hosts)
        for value in results.values():
            assert isinstance(value, ErrorResult) and isinstance(value.exception, ShardLost), value
            assert "closed" in str(value.exception)
    finally:
        open(release, "w").close()
        group.close()
