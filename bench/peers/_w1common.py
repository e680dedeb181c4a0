"""Shared helpers for the W1 peer scripts (argument parsing, timing, output).

Kept dependency-free so every script can use it under any Python 3.
"""
import argparse
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE_PYTHON = '/usr/bin/python3'
WARMUP = 200


def setup_path():
    """Make w1_target importable by absolute path, then leave the directory.

    The remote processes start with cwd inherited from us; running them from
    '/' makes sure they cannot pick w1_target.py up from the filesystem, so
    peers that ship modules on demand really have to ship it.
    """
    sys.path[:] = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    os.chdir('/')


def parse_args(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument('--n', type=int, default=2000,
                    help='measured calls (default 2000)')
    ap.add_argument('--warmup', type=int, default=WARMUP,
                    help='warm-up calls, not measured (default %d)' % WARMUP)
    return ap.parse_args()


def measure(call, n, warmup, expect=2):
    """Run ``call`` warmup + n times sequentially; return n samples in ns."""
    for _ in range(warmup):
        r = call()
        if r != expect:
            raise AssertionError('call returned %r, expected %r' % (r, expect))
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = clock()
        r = call()
        samples[i] = clock() - t0
        if r != expect:
            raise AssertionError('call returned %r, expected %r' % (r, expect))
    return samples


def stats_us(samples):
    s = sorted(samples)
    n = len(s)
    if n % 2:
        median = s[n // 2]
    else:
        median = (s[n // 2 - 1] + s[n // 2]) / 2.0
    # nearest-rank p99: the smallest sample >= 99% of all samples
    p99 = s[max(0, int(math.ceil(0.99 * n)) - 1)]
    mean = sum(s) / float(n)
    return {
        'median_us': round(median / 1000.0, 1),
        'p99_us': round(p99 / 1000.0, 1),
        'mean_us': round(mean / 1000.0, 1),
    }


def emit(impl, samples, python, version):
    rec = {'workload': 'W1', 'impl': impl, 'transport': 'local',
           'n': len(samples)}
    rec.update(stats_us(samples))
    rec['python'] = python
    rec['version'] = version
    sys.stdout.write(json.dumps(rec) + '\n')
    sys.stdout.flush()


def dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return 'unknown'


def note(msg):
    sys.stderr.write('[%s] %s\n' % (os.path.basename(sys.argv[0]), msg))
    sys.stderr.flush()
