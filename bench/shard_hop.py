#!/usr/bin/env python3
"""The per-call cost of a shard hop, and W2 warm with workers 1 and 2. JSON lines on stdout.

    PYTHONPATH=. .venv/bin/python bench/shard_hop.py [--hosts 200] [--rounds 20]

One loopback sshd fleet (``scripts/fleet.py``) of ``--hosts`` addresses. Two measurements:

- ``hop``: a warm ``os.getpid`` call to one host, in this process (``Group([host])``) and
  through one shard process (a ``shards.driver.Driver`` of one local shard, which is what a
  sharded group's fan-out runs through), ``--rounds`` calls each after one cold call.
- ``w2``: ``Group(hosts, workers=W).call(os.getpid)`` cold once (shards started, tunnels
  connected), then warm ``--rounds`` times, W = 1 and 2.

Each line gives wall seconds per call (median) and controller CPU seconds per call: this
process's plus its shard processes' (``/proc/<pid>/task/*/schedstat``; also each apart), measured around the
warm calls (and, for ``cold_*``, around the cold one: shard start included); ``w2`` lines
also give this process's RSS (workers 1 runs first: it stays as high) and each shard's PSS
with its tunnels open. The machine
also runs the fleet's sshd and agents: read ratios within one run, and the load it reports.
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

from fleet import Fleet, shard_pids as fleet_shard_pids  # noqa: E402
from harness import runner  # noqa: E402
from harness.procfs import pss, self_rss, threads_cpu_s  # noqa: E402

import chopsticks  # noqa: E402
from chopsticks import Group  # noqa: E402
from chopsticks.jobs import Call  # noqa: E402
from chopsticks.shards.driver import for_group, spec_of  # noqa: E402
from chopsticks.transports.ssh_options import SSHOptions  # noqa: E402
from chopsticks.tunnel import SSHTunnel  # noqa: E402


def shard_pids() -> List[int]:
    """This process's shard processes."""
    return fleet_shard_pids(os.getpid())


def controller_cpu() -> Tuple[float, float]:
    """CPU seconds so far of this process, and of its shard processes."""
    return threads_cpu_s(os.getpid()) or 0.0, sum(threads_cpu_s(pid) or 0.0 for pid in shard_pids())


def memory() -> dict:
    """This process's RSS and each shard's PSS, in MiB, with the tunnels open."""
    return {"driver_rss_mib": round(self_rss() / 2**20, 1),
            "shard_pss_mib": [round(pss(pid) / 2**20, 1) for pid in shard_pids()]}


def measure(run_once, rounds: int) -> dict:
    (driver0, shards0), started = controller_cpu(), time.perf_counter()
    run_once()  # cold: connects
    (driver1, shards1), cold_wall = controller_cpu(), time.perf_counter() - started
    walls = []
    for _ in range(rounds):
        started = time.perf_counter()
        run_once()
        walls.append(time.perf_counter() - started)
    driver2, shards2 = controller_cpu()
    return {"cold_wall_s": cold_wall, "cold_controller_cpu_s": driver1 - driver0 + shards1 - shards0,
            "wall_s_median": statistics.median(walls),
            "controller_cpu_s_per_call": (driver2 - driver1 + shards2 - shards1) / rounds,
            "driver_cpu_s_per_call": (driver2 - driver1) / rounds, "shards_cpu_s_per_call": (shards2 - shards1) / rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    runner.check_checkout(chopsticks)
    with Fleet(args.hosts) as fleet:
        opts = SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="", agent=False)
        host = fleet.hosts[0]
        load = os.getloadavg()

        plain = Group([host], options=opts)
        line = measure(lambda: plain.call(os.getpid).raise_failures(), args.rounds)
        print(json.dumps(dict(bench="hop", path="in_process", hosts=1, load=load, **line)), flush=True)
        plain.close()

        driver = for_group(1, 64, None)
        driver.place([spec_of(SSHTunnel(host, options=opts))])
        call = Call.of(os.getpid)
        line = measure(lambda: dict(driver.iter_job(call, [host])), args.rounds)
        print(json.dumps(dict(bench="hop", path="one_shard_process", hosts=1, load=load, **line)), flush=True)
        driver.close()

        for workers in (1, 2):
            group = Group(fleet.hosts, options=opts, workers=workers)
            line = measure(lambda: group.call(os.getpid).raise_failures(), args.rounds)
            print(json.dumps(dict(bench="w2", workers=workers, hosts=len(fleet.hosts), load=os.getloadavg(),
                                  **line, **memory())), flush=True)
            group.close()


if __name__ == "__main__":
    main()
