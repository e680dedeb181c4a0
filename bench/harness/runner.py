"""What the bench's runner scripts share: a loopback fleet, the peers' interpreter and
environment, and appending JSON lines to a results file."""

import importlib.util
import json
import os
import platform
import socket
import sys
import time

HARNESS = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HARNESS)
ROOT = os.path.dirname(BENCH)
PEERS = os.path.join(BENCH, 'peers')
RESULTS = os.path.join(BENCH, 'results')
PEERS_VENV = os.environ.get('PEERS_VENV') or os.path.join(BENCH, '.peers-venv')
PEERS_PY = os.path.join(PEERS_VENV, 'bin', 'python')


def peers_env():
    """The environment a peer script runs in: ``PYTHONPATH`` is ``bench/`` alone, so that it
    imports ``harness`` and ``w1_target`` from there and never this repository's
    ``chopsticks`` (chopsticks 1.0 has the same name); no ``PYTHONHOME``."""
    env = dict(os.environ)
    env.pop('PYTHONHOME', None)
    env['PYTHONPATH'] = BENCH
    return env


def check_checkout(package):
    """Refuse to measure a ``chopsticks`` other than this checkout's.

    Our scripts import it like any program does (the project venv has the checkout on its
    path; another checkout, e.g. a git worktree, is chosen with ``PYTHONPATH=<its root>``),
    so a venv made for another checkout would silently measure that one."""
    where = os.path.dirname(os.path.dirname(os.path.abspath(package.__file__)))
    if os.path.realpath(where) != os.path.realpath(ROOT):
        raise SystemExit('%s: imported %s from %s, not from this checkout (%s); run with '
                         'PYTHONPATH=%s' % (os.path.basename(sys.argv[0]), package.__name__, where,
                                            ROOT, ROOT))


_FLEET = []


def fleet_class():
    """``Fleet`` of this repository's ``scripts/fleet.py``."""
    return fleet_module().Fleet


def fleet_module():
    """This repository's ``scripts/fleet.py``, loaded from its path once (no ``sys.path``
    change, no bytecode left in scripts/)."""
    if not _FLEET:
        spec = importlib.util.spec_from_file_location('fleet', os.path.join(ROOT, 'scripts', 'fleet.py'))
        module = importlib.util.module_from_spec(spec)
        dont_write = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        try:
            spec.loader.exec_module(module)
        finally:
            sys.dont_write_bytecode = dont_write
        _FLEET.append(module)
    return _FLEET[0]


def start_fleet(count, timeout=20.0):
    """A loopback sshd fleet of ``count`` hosts, started; the caller stops it."""
    fleet = fleet_class()(count)
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
