#!/usr/bin/env python3
"""How many SSH tunnels one controller process holds open at once, through ``Group``.

For each count N (``--counts 1000,2000``): start a loopback fleet of N hosts (one sshd), then
``Group(hosts).connect()`` (every agent started and held), one warm ``group.call(os.getpid)``
over all of them, a report, and ``group.close()``. Prints one JSON line per count: how many
connected, how long connecting and the warm call took, the controller's RSS, its growth per
tunnel (``controller_kib_per_tunnel``), its live greenlets and open fds with everything
connected, and MemAvailable's drop per host (sshd + agent + controller). Each line also
carries ``libssh2_session_kib``: the RSS of one bare libssh2 session (``Session()``, before
any handshake; measured in a child process), the part of a tunnel's cost that is libssh2's
own. Stops early when MemAvailable would fall under ``--mem-floor-gib`` (estimated from the
memory per host of the last count of 500 or more, else 8 MiB).

    .venv/bin/python bench/max_tunnels.py --counts 1000,2000
"""

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

import gevent

import chopsticks
from chopsticks import Group, SSHOptions
from chopsticks.transports.ssh import raise_open_files_limit
from harness.procfs import mem_available, open_fds, self_rss
from harness.runner import append_results, check_checkout, start_fleet

MIB = 1 << 20
KIB = 1 << 10
# The child that measures one bare libssh2 session: RSS growth over SESSIONS of them, in KiB each.
SESSIONS = 200
SESSION_COST = """
from ssh2.session import Session
def rss():
    with open('/proc/self/status') as f:
        return int(next(line for line in f if line.startswith('VmRSS')).split()[1])
Session()
before = rss()
sessions = [Session() for _ in range(%d)]
print((rss() - before) / %d)
""" % (SESSIONS, SESSIONS)


def libssh2_session_kib() -> float:
    out = subprocess.run([sys.executable, "-c", SESSION_COST], check=True, capture_output=True, text=True)
    return round(float(out.stdout), 1)


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and not g.dead)


def measure(count: int, deadline: float, session_kib: float) -> dict:
    fleet = start_fleet(count, timeout=60)
    try:
        options = SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="",
                             agent=False)
        before = mem_available()
        rss_before = self_rss()
        group = Group(fleet.hosts, options=options, connect_timeout=deadline)
        started = time.monotonic()
        connected = group.connect(deadline=deadline)
        connect_s = time.monotonic() - started
        failures = {}
        for _, error in connected.failures():
            failures[error.msg[:120]] = failures.get(error.msg[:120], 0) + 1
        live = group.select(lambda t: t.connected)
        started = time.monotonic()
        warm = live.call(os.getpid, timeout=60)
        warm_s = time.monotonic() - started
        rss = self_rss()
        record = {
            "workload": "max_tunnels", "impl": "chopsticks", "n": count, "connected": len(live),
            "warm_ok": sum(1 for _ in warm.successful()), "connect_s": round(connect_s, 2),
            "warm_s": round(warm_s, 3), "controller_rss_mib": round(rss / MIB, 1),
            "controller_rss_growth_mib": round((rss - rss_before) / MIB, 1),
            "controller_kib_per_tunnel": round((rss - rss_before) / KIB / max(1, len(live)), 1),
            "libssh2_session_kib": session_kib, "controller_greenlets": live_greenlets(),
            "controller_fds": open_fds(),
            "mem_mib_per_host": round((before - mem_available()) / MIB / max(1, len(live)), 2),
            "failures": failures,
        }
        started = time.monotonic()
        group.close()
        record["close_s"] = round(time.monotonic() - started, 2)
        return record
    finally:
        fleet.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1000,2000", help="tunnel counts to try, in order (default 1000,2000)")
    parser.add_argument("--deadline", type=float, default=600, help="limit on connecting them all, s")
    parser.add_argument("--mem-floor-gib", type=float, default=2.0,
                        help="skip a count that would leave less MemAvailable than this (at ~8 MiB/host)")
    parser.add_argument("--json-out", default="max_tunnels.jsonl", help="results file (under bench/results/)")
    args = parser.parse_args()
    check_checkout(chopsticks)
    raise_open_files_limit()
    print("# open-files limit %s" % (resource.getrlimit(resource.RLIMIT_NOFILE),), file=sys.stderr)
    records = []
    per_host_mib = 8.0
    session_kib = libssh2_session_kib()
    for count in [int(n) for n in args.counts.split(",")]:
        if mem_available() - count * per_host_mib * MIB < args.mem_floor_gib * (1 << 30):
            print("# skipping %d tunnels: not enough memory (%.1f MiB a host)" % (count, per_host_mib),
                  file=sys.stderr)
            break
        record = measure(count, args.deadline, session_kib)
        if record["connected"] >= 500:  # smaller fleets' figures are mostly other processes' noise
            per_host_mib = record["mem_mib_per_host"]
        print(json.dumps(record), flush=True)
        records.append(record)
        if record["connected"] < count:
            break
    append_results(args.json_out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
