"""What the benchmark scripts share: starting a loopback fleet, and appending JSON lines."""

import json
import os
import platform
import socket
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, 'results')


def start_fleet(count, timeout=20.0):
    """A loopback sshd fleet of ``count`` hosts (scripts/fleet.py), started; the caller stops it."""
    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    try:
        from fleet import Fleet
    finally:
        sys.path.pop(0)
        sys.dont_write_bytecode = False
    fleet = Fleet(count)
    try:
        return fleet.start(timeout=timeout)
    except BaseException:
        fleet.stop()
        raise


def append_results(json_out, records, **extra):
    """Append ``records`` to ``json_out`` (relative paths go under bench/results/), stamped
    with when, where and which controller Python produced them; returns the path."""
    path = json_out if os.path.isabs(json_out) else os.path.join(RESULTS, json_out)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stamp = dict({'run_at': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'host': socket.gethostname(),
                  'controller_python': platform.python_version()}, **extra)
    with open(path, 'a') as f:
        for rec in records:
            f.write(json.dumps(dict(rec, **stamp)) + '\n')
    return path
