"""W1 (call latency): argument parsing, timing, statistics and output for the peer scripts,
whose timing and statistics ``bench/w1_latency.py`` uses too; and the containers of
``--transport docker``.

Kept dependency-free so every script can use it under any Python 3.
"""
import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time

REMOTE_PYTHON = '/usr/bin/python3'
WARMUP = 200
DEFAULT_IMAGE = 'chopsticks/python:3.11'


def setup_path():
    """Leave the directory for '/', keeping imports (w1_target from ``bench/``) working.

    The remote processes start with cwd inherited from us; running them from
    '/' makes sure they cannot pick w1_target.py up from the filesystem, so
    peers that ship modules on demand really have to ship it. Relative entries
    of sys.path (the cwd's '') are made absolute first, so that what they
    found still resolves.
    """
    sys.path[:] = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    os.chdir('/')


def parse_args(description, transports=('local', 'ssh')):
    """--n, --warmup, and the transport: ``local`` (a child /usr/bin/python3),
    ``ssh`` (a fleet host; the fleet is described by --host, --port,
    --key, --known-hosts and --ssh-config, all required with ssh) or
    ``docker`` (python3 in a fresh container of --image under --engine,
    named --name or else ``w1-peer-<impl>-<pid>``; see container_name)."""
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
    add_container_args(ap)
    ap.add_argument('--name', help='docker: the container name (default '
                    'w1-peer-<impl>-<pid>)')
    args = ap.parse_args()
    if args.transport == 'ssh':
        missing = [name for name in ('host', 'port', 'key', 'known_hosts',
                                     'ssh_config')
                   if getattr(args, name) is None]
        if missing:
            ap.error('--transport ssh needs --' + ', --'.join(
                m.replace('_', '-') for m in missing))
    return args


def add_container_args(ap):
    """--image and --engine, for ``--transport docker``."""
    ap.add_argument('--image', default=DEFAULT_IMAGE,
                    help='docker: the image (default %(default)s)')
    ap.add_argument('--engine', default='podman',
                    help='docker: the engine command (default %(default)s)')


def json_lines(text, tag):
    """The JSON objects of a child's stdout, one per line; other lines go to stderr as
    ``[tag] line``."""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            sys.stderr.write('[%s] %s\n' % (tag, line))
            continue
        yield rec


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


# --- containers (--transport docker) ---------------------------------------

def engine_path(engine):
    """The engine's executable as found on PATH (e.g. /usr/bin/podman)."""
    path = shutil.which(engine)
    if not path:
        raise SystemExit('container engine %r not found on PATH' % engine)
    return path


def container_name(args, impl):
    """--name if given (w1_peers.py gives one, to clean up after a killed script),
    else ``w1-peer-<impl>-<pid>``."""
    return args.name or 'w1-peer-%s-%d' % (impl, os.getpid())


def check_image(engine, image):
    """Fail early (no pull) when the image is not in the engine's local store."""
    r = subprocess.run([engine, 'image', 'inspect', image],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode:
        raise SystemExit('image %r not found locally by %s: %s' % (
            image, engine, r.stderr.decode(errors='replace').strip()))


def remove_container(engine, name):
    """``ENGINE rm -f [--time 0] NAME``; quiet, and fine if it is already gone."""
    argv = [engine, 'rm', '-f']
    if 'podman' in os.path.basename(engine):
        argv += ['--time', '0']
    try:
        subprocess.run(argv + [name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        note('could not remove container %s: %s' % (name, e))


@contextlib.contextmanager
def sleeping_container(args, impl):
    """A fresh container of --image running ``sleep infinity`` (``ENGINE run
    -d --rm --pull=never --name NAME IMAGE sleep infinity``), for peers that
    exec into an existing container. Yields (engine path, name); the container
    is removed on the way out, errors included."""
    engine = engine_path(args.engine)
    check_image(engine, args.image)
    name = container_name(args, impl)
    try:
        r = subprocess.run([engine, 'run', '-d', '--rm', '--pull=never',
                            '--name', name, args.image, 'sleep', 'infinity'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode:
            raise RuntimeError('%s run %s failed: %s' % (
                engine, args.image, r.stderr.decode(errors='replace').strip()))
        yield engine, name
    finally:
        remove_container(engine, name)
