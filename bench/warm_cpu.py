"""The controller's CPU per host of a warm fan-out: many rounds over one connected fleet.

    .venv/bin/python bench/warm_cpu.py [--hosts 1000] [--rounds 30] [--json-out FILE]
    PYTHONPATH=/an/older/checkout .venv/bin/python bench/warm_cpu.py   # the same, for that code

A loopback sshd fleet of ``--hosts`` addresses is started, a ``Group`` connects to all of
them and warms up, then each workload runs ``--rounds`` fan-outs. A round's cost is the
controller's ``time.process_time()`` (all its threads) over the round, per host; one JSON
line per workload gives the median and minimum of the rounds and the median wall time.
``w2_fanout.py`` reports the same quantity from only three rounds: this one is for
comparing two versions of the library, run one after the other on the same machine
(``chopsticks_from`` says which tree was measured).

- ``getpid``: ``group.call(os.getpid)``, the smallest call there is.
- ``list200``: ``group.call(len, list(range(200)))``, an argument that takes real pickling.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

import chopsticks
from harness.runner import append_results, start_fleet

WORKLOADS = {"getpid": (os.getpid, ()), "list200": (len, (list(range(200)),))}
WARM_UP = 3


def _revision(tree):
    try:
        return subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except OSError:
        return None


def measure(group, fn, args, rounds):
    """Per round: (controller CPU µs per host, wall ms)."""
    samples = []
    for _ in range(rounds):
        cpu, wall = time.process_time(), time.perf_counter()
        group.call(fn, *args).raise_failures()
        samples.append(((time.process_time() - cpu) / len(group) * 1e6, (time.perf_counter() - wall) * 1e3))
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json-out", default="warm_cpu.jsonl", help="results file (relative: under bench/results/)")
    args = parser.parse_args()
    from chopsticks import Group, SSHOptions

    tree = os.path.dirname(os.path.dirname(os.path.abspath(chopsticks.__file__)))
    fleet = start_fleet(args.hosts)
    try:
        options = SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="",
                             agent=False)
        with Group(fleet.hosts, options=options) as group:
            group.connect().raise_failures()
            for _ in range(WARM_UP):
                group.call(os.getpid).raise_failures()
            records = []
            for name, (fn, call_args) in WORKLOADS.items():
                samples = measure(group, fn, call_args, args.rounds)
                cpu = [c for c, _ in samples]
                record = {"bench": "warm_cpu", "impl": "chopsticks", "call": name, "n": args.hosts,
                          "rounds": args.rounds, "controller_cpu_us_per_host": round(statistics.median(cpu), 1),
                          "controller_cpu_us_per_host_min": round(min(cpu), 1),
                          "wall_ms": round(statistics.median(w for _, w in samples), 1),
                          "chopsticks_from": tree, "git": _revision(tree)}
                print(json.dumps(record), flush=True)
                records.append(record)
    finally:
        fleet.stop()
    append_results(args.json_out, records)


if __name__ == "__main__":
    main()
