"""Cold fan-out through one jump host against the same fan-out without one.

    .venv/bin/python bench/bastion.py [--hosts 500] [--modes direct,bastion] [--json-out FILE]
    PYTHONPATH=/an/older/checkout .venv/bin/python bench/bastion.py   # the same, for that code

A loopback sshd fleet of ``--hosts`` + 1 addresses is started; the first is the bastion.
Each mode runs in a child process of its own (a fresh controller): a ``Group`` of the other
``--hosts`` addresses, either reached directly (``direct``) or with ``jump=`` the bastion
(``bastion``), connects and calls ``os.getpid`` on every host (cold), then repeats the call
three times (warm). One JSON line per mode: the cold wall time, the controller's CPU
(``time.process_time``) and the whole machine's busy CPU over the cold fan-out, per host;
the warm round's median wall time and controller CPU per host; and ``bastion_logins``, the
TCP connections the controller holds to the bastion once every host is connected (what the
jump host's sshd sees as logins). Modes run in the order given, so ``direct,bastion,direct``
brackets one with the other on a noisy machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import chopsticks
from harness.procfs import machine_busy_s
from harness.runner import append_results, fleet_module, start_fleet

WARM_ROUNDS = 3


def child(args):
    """One mode, in this process: print one JSON object."""
    from chopsticks import Group, SSHOptions
    hosts = args.child_hosts.split(",")
    bastion, far = hosts[0], hosts[1:]
    options = SSHOptions(port=args.port, key=args.key, known_hosts=args.known_hosts, ssh_config="", agent=False,
                         jump="%s:%d" % (bastion, args.port) if args.child == "bastion" else None)
    with Group(far, options=options) as group:
        cpu, wall = time.process_time(), time.perf_counter()
        cold = group.call(os.getpid)
        cold_cpu, cold_wall = time.process_time() - cpu, time.perf_counter() - wall
        failed = [error.msg for _, error in cold.failures()]
        logins = fleet_module().connections_to(bastion, args.port)
        warm = []
        for _ in range(WARM_ROUNDS):
            cpu, wall = time.process_time(), time.perf_counter()
            group.call(os.getpid)
            warm.append((time.process_time() - cpu, time.perf_counter() - wall))
    print(json.dumps({"failed": len(failed), "first_failure": failed[0] if failed else None, "cold_s": cold_wall, "cold_controller_cpu_s": cold_cpu, "bastion_logins": logins,
                      "warm_wall_ms": statistics.median(w for _, w in warm) * 1e3,
                      "warm_controller_cpu_us_per_host": statistics.median(c for c, _ in warm) / len(far) * 1e6}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--modes", default="direct,bastion")
    parser.add_argument("--json-out", default="bastion.jsonl", help="results file (relative: under bench/results/)")
    parser.add_argument("--child", choices=("direct", "bastion"), help=argparse.SUPPRESS)
    parser.add_argument("--child-hosts", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--known-hosts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    tree = os.path.dirname(os.path.dirname(os.path.abspath(chopsticks.__file__)))
    fleet = start_fleet(args.hosts + 1)
    records = []
    try:
        for mode in args.modes.split(","):
            busy = machine_busy_s()
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", mode, "--child-hosts", ",".join(fleet.hosts),
                 "--port", str(fleet.port), "--key", fleet.key, "--known-hosts", fleet.known_hosts],
                capture_output=True, text=True)
            busy = machine_busy_s() - busy
            if out.returncode:
                sys.exit("the %s child failed:\n%s" % (mode, out.stderr[-3000:]))
            got = json.loads(out.stdout.strip().splitlines()[-1])
            record = {"bench": "bastion", "impl": "chopsticks", "mode": mode, "n": args.hosts,
                      "failed": got["failed"], "first_failure": got["first_failure"],
                      "cold_s": round(got["cold_s"], 2),
                      "cold_controller_cpu_ms_per_host": round(got["cold_controller_cpu_s"] / args.hosts * 1e3, 2),
                      "cold_machine_cpu_ms_per_host": round(busy / args.hosts * 1e3, 1),
                      "bastion_logins": got["bastion_logins"],
                      "warm_wall_ms": round(got["warm_wall_ms"], 1),
                      "warm_controller_cpu_us_per_host": round(got["warm_controller_cpu_us_per_host"], 1),
                      "load": os.getloadavg()[0], "chopsticks_from": tree}
            print(json.dumps(record), flush=True)
            records.append(record)
    finally:
        fleet.stop()
    append_results(args.json_out, records)


if __name__ == "__main__":
    main()
