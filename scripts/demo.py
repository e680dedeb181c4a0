"""Demo: fan one call out over a fleet of local agents and print a table.

Each "host" is a Local tunnel: a fresh python3 subprocess that has nothing of this project
installed; the functions below reach it by import on demand (and, for ``describe``, which
lives in this script's ``__main__``, by source).
"""

import argparse
import os
import platform
import sys
import time

import gevent

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chopsticks import ChopsticksError  # noqa: E402
from chopsticks.tunnel import Local  # noqa: E402


def describe():
    """Runs on each agent: what it is."""
    import resource
    return {
        "pid": os.getpid(),
        "python": platform.python_version(),
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8, help="number of local agents (default 8)")
    args = parser.parse_args()
    if args.hosts < 1:
        parser.error("--hosts must be at least 1")
    tunnels = [Local("agent-%02d" % i) for i in range(args.hosts)]
    started = time.monotonic()
    jobs = [gevent.spawn(t.call, describe) for t in tunnels]
    gevent.joinall(jobs)
    elapsed = time.monotonic() - started
    print("%-10s %8s %8s %10s" % ("host", "pid", "python", "rss KiB"))
    failed = 0
    for tunnel, job in zip(tunnels, jobs):
        if job.successful():
            info = job.value
            print("%-10s %8d %8s %10d" % (tunnel.host, info["pid"], info["python"], info["rss_kib"]))
        else:
            failed += 1
            error = job.exception
            print("%-10s FAILED: %s" % (tunnel.host, error if isinstance(error, ChopsticksError) else repr(error)))
    started_warm = time.monotonic()
    gevent.joinall([gevent.spawn(t.call, os.getpid) for t in tunnels])
    warm = time.monotonic() - started_warm
    for tunnel in tunnels:
        tunnel.close()
    print("\n%d agents: cold start and call %.2fs, warm call %.1f ms; %d failed"
          % (len(tunnels), elapsed, warm * 1000, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
