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


def parse_args(description, transports=('local', 'ssh')):
    """--n, --warmup, and the transport: ``local`` (a child /usr/bin/python3)
    or ``ssh`` (a fleet host; the fleet is described by --host, --port,
    --key, --known-hosts and --ssh-config, all required with ssh)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument('--n', type=int, default=2000,
                    help='measured calls (default 2000)')
    ap.add_argument('--warmup', type=int, default=WARMUP,
                    help='warm-up calls, not measured (default %d)' % WARMUP)
    ap.add_argument('--transport', choices=transports, default=transports[0])
    ap.add_argument('--host', help='ssh: the fleet host (e.g. 127.0.0.2)')
    ap.add_argument('--port', type=int, help='ssh: the fleet sshd port')
    ap.add_argument('--key', help='ssh: the client private key')
    ap.add_argument('--known-hosts', help='ssh: the fleet known_hosts file')
    ap.add_argument('--ssh-config', help='ssh: the fleet ssh_config '
                    '(Port, User, IdentityFile, UserKnownHostsFile)')
    args = ap.parse_args()
    if args.transport == 'ssh':
        missing = [name for name in ('host', 'port', 'key', 'known_hosts',
                                     'ssh_config')
                   if getattr(args, name) is None]
        if missing:
            ap.error('--transport ssh needs --' + ', --'.join(
                m.replace('_', '-') for m in missing))
    return args


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


def emit(impl, samples, python, version, transport='local', **extra):
    rec = {'workload': 'W1', 'impl': impl, 'transport': transport,
           'n': len(samples)}
    rec.update(stats_us(samples))
    rec.update(extra)
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
