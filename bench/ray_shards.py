#!/usr/bin/env python3
"""W2 through a 2-node loopback Ray cluster against workers=1, in one run. JSON lines on stdout.

    PYTHONPATH=. .venv/bin/python bench/ray_shards.py [--hosts 200] [--rounds 10]

One loopback sshd fleet (``scripts/fleet.py``) of ``--hosts`` addresses and one Ray cluster
(``scripts/ray_cluster.py``: a head node and a second node, one CPU each, each a ``ray
start`` in its own directory). ``Group(hosts).call(os.getpid)`` is run cold once (tunnels
connected; for the cluster, actors started too), then warm ``--rounds`` times, three ways:
``workers=1`` in this process, then ``cluster=`` (two shards, one actor on each node).

Each line gives wall seconds (cold, and the warm median), resident memory after the warm
calls (this process, and each shard actor) and CPU seconds per call, split
where it is spent: ``driver`` (this process), ``shards`` (the actor processes, by the pids
they report) and ``ray`` (every other process of the cluster: raylets, GCS, agents). The
machine also runs the fleet's sshd and agents (2 cores here): read ratios within one run,
with the load each line reports. The cluster's start time is its own line.
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

from fleet import Fleet  # noqa: E402
from harness import runner  # noqa: E402
from harness.procfs import threads_cpu_s  # noqa: E402
from ray_cluster import HEAD_IP, RayCluster, descendants, ray_env  # noqa: E402

import chopsticks  # noqa: E402
from chopsticks import Group  # noqa: E402
from chopsticks.transports.ssh_options import SSHOptions  # noqa: E402


IDLE_SECONDS = 3.0


def cpu_of(pids) -> float:
    return sum(threads_cpu_s(pid) or 0.0 for pid in pids)


class Meter:
    """CPU seconds so far: this process, the group's actors, the rest of the cluster."""

    def __init__(self, cluster: RayCluster, group: Group):
        self.cluster, self.group = cluster, group

    def actors(self):
        driver = self.group._driver
        if driver is None:
            return []
        return [entry[0].pid for entry in driver.shards if entry is not None and entry[0].pid]

    def read(self) -> dict:
        actors = set(self.actors())
        rest = {pid for node in self.cluster.nodes for pid in [node.pid] + descendants(node.pid)} - actors
        return {"driver": threads_cpu_s(os.getpid()) or 0.0, "shards": cpu_of(actors), "ray": cpu_of(rest)}


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 if it is gone)."""
    try:
        with open("/proc/%d/status" % pid) as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(meter: Meter, run_once, rounds: int) -> dict:
    before, started = meter.read(), time.perf_counter()
    run_once()  # cold: connects (and starts the actors)
    cold_wall = time.perf_counter() - started
    after = meter.read()
    line = {"cold_wall_s": cold_wall}
    line.update({"cold_cpu_s_%s" % k: after[k] - before[k] for k in after})
    walls = []
    before = meter.read()
    for _ in range(rounds):
        started = time.perf_counter()
        run_once()
        walls.append(time.perf_counter() - started)
    after = meter.read()
    line["warm_wall_s_median"] = statistics.median(walls)
    line["rss_mb_driver"] = rss_mb(os.getpid())
    line["rss_mb_shards"] = [rss_mb(pid) for pid in meter.actors()]
    line.update({"warm_cpu_s_per_call_%s" % k: (after[k] - before[k]) / rounds for k in after})
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    runner.check_checkout(chopsticks)
    os.environ.update(ray_env())
    import ray

    with Fleet(args.hosts) as fleet, RayCluster(nodes=2, cpus=1) as cluster:
        print(json.dumps(dict(bench="ray_cluster_start", nodes=2, start_s=cluster.start_seconds,
                              load=os.getloadavg())), flush=True)
        ray.init(address=cluster.address, _node_ip_address=HEAD_IP, log_to_driver=False)
        while ray.cluster_resources().get("CPU", 0) < 2 or \
                sum(node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]) < 2:
            time.sleep(0.1)  # the second node's start is logged before the head has its CPU
        # what a driver joined to Ray spends doing nothing (its core worker's threads): the
        # share of the per-call driver CPU below that is not the fan-out's
        cpu0 = threads_cpu_s(os.getpid()) or 0.0
        time.sleep(IDLE_SECONDS)
        print(json.dumps(dict(bench="ray_driver_idle", seconds=IDLE_SECONDS,
                              cpu_s_per_s=((threads_cpu_s(os.getpid()) or 0.0) - cpu0) / IDLE_SECONDS)), flush=True)
        opts = SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="", agent=False)
        for path, kwargs in (("workers=1", {}), ("cluster", {"cluster": cluster.address})):
            group = Group(fleet.hosts, options=opts, **kwargs)
            line = measure(Meter(cluster, group), lambda: group.call(os.getpid).raise_failures(), args.rounds)
            print(json.dumps(dict(bench="w2_ray", path=path, hosts=len(fleet.hosts), rounds=args.rounds,
                                  load=os.getloadavg(), **line)), flush=True)
            group.close()
        ray.shutdown()


if __name__ == "__main__":
    main()
