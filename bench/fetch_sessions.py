#!/usr/bin/env python3
"""Fetch over extra SSH sessions: one big file from one loopback host, ours with each of
fetch's ``sessions`` values against OpenSSH in the same round.

A random file in /dev/shm on the (loopback) host is fetched into /dev/shm here, rounds
interleaved (floor, then ours with each ``sessions`` value, again and again) so drift shows.
The floor is ``ssh -c aes128-gcm@openssh.com host 'cat FILE' > /dev/shm/...`` minus the best
of three ``ssh host true`` (the login). Ours is ``SSHTunnel.fetch`` on a connected tunnel
(SHA-256 and SHA-1 of the copy, fsync, rename, as every fetch); ``sessions=0`` is the
tunnel's own stream. Controller CPU per GiB: this process (ours) or the ssh clients (floor).

    PYTHONPATH=$PWD .venv/bin/python bench/fetch_sessions.py [--mib 256] [--rounds 3] [--sessions 0,1,2,4]

One JSON line per (implementation, round) on stdout, medians on stderr; the lines go to
bench/results/fetch_sessions.jsonl too.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness.runner import append_results, start_fleet

MIB = 1 << 20
CIPHER = "aes128-gcm@openssh.com"


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def floor(fleet, host: str, src: str, dest: str) -> dict:
    base = ["ssh", "-F", fleet.ssh_config, "-o", "BatchMode=yes", "-c", CIPHER, host]

    def timed(command, out):
        started, cpu = time.monotonic(), children_cpu_s()
        with open(out, "wb") as f:
            subprocess.run(base + [command], stdout=f, check=True)
        return time.monotonic() - started, children_cpu_s() - cpu

    login, login_cpu = min(timed("true", os.devnull) for _ in range(3))
    wall, cpu = timed("cat %s" % src, dest)
    return {"wall_s": max(0.001, wall - login), "cpu_s": max(0.0, cpu - login_cpu)}


def ours(tunnel, src: str, dest: str, sessions: int) -> dict:
    started, cpu = time.monotonic(), time.process_time()
    result = tunnel.fetch(src, dest, sessions=sessions)
    return {"wall_s": time.monotonic() - started, "cpu_s": time.process_time() - cpu,
            "sessions_used": result.get("sessions", 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", default="0,1,2,4", help="fetch's sessions values, comma-separated")
    parser.add_argument("--json-out", default="fetch_sessions.jsonl")
    args = parser.parse_args()
    from chopsticks import SSHOptions, SSHTunnel
    work = tempfile.mkdtemp(prefix="chopsticks-fetch-", dir="/dev/shm")
    fleet = start_fleet(1)
    records = []
    try:
        src = os.path.join(work, "src.bin")
        with open(src, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MIB))
        dest = os.path.join(work, "dest.bin")
        options = SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts, ssh_config="",
                             agent=False)
        with SSHTunnel(fleet.hosts[0], options=options) as tunnel:
            tunnel.call(os.getpid)
            for round_ in range(1, args.rounds + 1):
                runs = [("floor: ssh -c %s host 'cat f'" % CIPHER, lambda: floor(fleet, fleet.hosts[0], src, dest))]
                runs += [("chopsticks sessions=%s" % n, lambda n=int(n): ours(tunnel, src, dest, n))
                         for n in args.sessions.split(",")]
                for impl, run in runs:
                    measured = run()
                    gib = args.mib / 1024
                    record = {"bench": "fetch_sessions", "impl": impl, "mib": args.mib, "round": round_,
                              "mib_per_s": round(args.mib / measured["wall_s"], 1),
                              "controller_cpu_s_per_gib": round(measured["cpu_s"] / gib, 2)}
                    if "sessions_used" in measured:
                        record["sessions_used"] = measured["sessions_used"]
                    print(json.dumps(record), flush=True)
                    records.append(record)
                    os.unlink(dest)
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)
    append_results(args.json_out, records)
    print("\n| implementation | MiB/s (median, min-max) | controller CPU-s per GiB (median) |\n| --- | ---: | ---: |",
          file=sys.stderr)
    for impl in dict.fromkeys(r["impl"] for r in records):
        mine = [r for r in records if r["impl"] == impl]
        speeds = [r["mib_per_s"] for r in mine]
        print("| %s | %.0f (%.0f-%.0f) | %.2f |" % (impl, statistics.median(speeds), min(speeds), max(speeds),
                                                   statistics.median(r["controller_cpu_s_per_gib"] for r in mine)),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
