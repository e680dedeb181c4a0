#!/usr/bin/env python3
"""Run the W1 (call latency) peer benchmarks, local subprocess, over SSH or in a container.

Creates the peers venv with peers/setup_env.sh if it is missing, then runs
each peer script (``bench/peers/w1_*.py``) with the venv's python, cwd =
bench/peers and PYTHONPATH = bench alone (``harness.runner.peers_env``: the
harness and w1_target are importable, our own ``chopsticks`` package in the
repo root is not, so the chopsticks 1.0 script gets 1.0), and forwards their
JSON lines to stdout. A peer that fails gets one JSON line with an "error" key
instead; the others still run.

    python3 bench/w1_peers.py [--n 2000] [--only mitogen --only execnet ...]
    python3 bench/w1_peers.py --transport ssh [--host H --port P --key K
                              --known-hosts F --ssh-config F]
    python3 bench/w1_peers.py --transport docker [--image IMAGE --engine ENGINE]

With --transport ssh the peers talk to a loopback sshd fleet host: the one
given by the --host/--port/--key/--known-hosts/--ssh-config options (as
bench/w1_latency.py passes them), or else a 1-host fleet this script starts
with scripts/fleet.py and stops at the end. The pipe floor is always local.
parallel-ssh is SSH only.

With --transport docker each peer script talks to python3 in a fresh container
of --image (default chopsticks/python:3.11) under --engine (default podman),
which the script starts and removes itself: mitogen (router.podman) and execnet
(popen//python=ENGINE exec -i NAME python3) exec into a ``sleep infinity``
container; chopsticks 1.0 uses its own Docker tunnel (``docker run -i --rm``,
``docker`` being a symlink to the engine). This script names each container
(``w1-peer-<peer>-<pid of w1_peers.py>``, passed as --name) and removes it again
after the script ends (``ENGINE rm -f --time 0 NAME``), so a script killed at
its timeout leaves nothing behind either.
"""
import argparse
import json
import os
import subprocess
import sys

from harness.runner import PEERS as PEERS_DIR
from harness.runner import PEERS_PY, peers_env, start_fleet
from harness.w1 import add_container_args, json_lines, remove_container

# name -> (script, impl names it reports, needs the venv, transports)
PEERS = [
    ('pipe-floor', 'w1_pipe_floor.py', ['pipe-floor'], False, ('local',)),
    ('mitogen', 'w1_mitogen.py', ['mitogen'], True, ('local', 'ssh', 'docker')),
    ('execnet', 'w1_execnet.py', ['execnet-remote_exec', 'execnet-channel'], True,
     ('local', 'ssh', 'docker')),
    ('chopsticks-1.0', 'w1_chopsticks1.py', ['chopsticks-1.0'], True,
     ('local', 'ssh', 'docker')),
    ('parallel-ssh', 'w1_pssh.py', ['parallel-ssh'], True, ('ssh',)),
]
ALIASES = {'pipe_floor': 'pipe-floor', 'floor': 'pipe-floor',
           'chopsticks1': 'chopsticks-1.0', 'chopsticks': 'chopsticks-1.0',
           'pssh': 'parallel-ssh'}
FLEET_ARGS = ('host', 'port', 'key', 'known_hosts', 'ssh_config')


def error_line(impl, msg, transport='local'):
    print(json.dumps({'workload': 'W1', 'impl': impl, 'transport': transport,
                      'error': msg}), flush=True)


def resolve(only, transport='local'):
    if not only:
        # the floor is local, and is kept with ssh for scale
        return [p for p in PEERS if transport in p[4] or p[0] == 'pipe-floor']
    wanted = set()
    for name in only:
        name = ALIASES.get(name, name)
        hits = [p for p in PEERS if name == p[0] or name in p[2]]
        if not hits:
            sys.exit('w1_peers.py: unknown peer %r; choose from %s' % (
                name, ', '.join(p[0] for p in PEERS)))
        wanted.update(p[0] for p in hits)
    chosen = [p for p in PEERS if p[0] in wanted]
    for p in chosen:
        if transport not in p[4] and p[0] != 'pipe-floor':
            sys.exit('w1_peers.py: %s does not run with --transport %s' % (p[0], transport))
    return chosen


def ensure_venv():
    """Return None when the venv is usable, else an error message."""
    if os.path.exists(PEERS_PY):
        return None
    r = subprocess.run(['bash', os.path.join(PEERS_DIR, 'setup_env.sh')],
                       stdout=sys.stderr)
    if r.returncode != 0 or not os.path.exists(PEERS_PY):
        return 'setup_env.sh failed (exit %d)' % r.returncode
    return None


def run_peer(peer, python, n, timeout, transport='local', fleet_argv=(), container=None):
    """Run one peer script; ``container`` is (image, engine) with docker."""
    name, script, impls, _, transports = peer
    if transport not in transports:
        transport, fleet_argv = 'local', ()  # the pipe floor
    extra = ['--transport', transport] + list(fleet_argv) if transport != 'local' else []
    cname = None
    if transport == 'docker':
        image, engine = container
        cname = 'w1-peer-%s-%d' % (name, os.getpid())
        extra += ['--image', image, '--engine', engine, '--name', cname]
    try:
        _run_script(name, script, impls, python, n, timeout, transport, extra)
    finally:
        if cname is not None:
            remove_container(container[1], cname)


def _run_script(name, script, impls, python, n, timeout, transport, extra):
    try:
        r = subprocess.run([python, os.path.join(PEERS_DIR, script), '--n', str(n)] + extra,
                           cwd=PEERS_DIR, env=peers_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = e.stdout or b'', e.stderr or b'', 'timeout %ds' % timeout
    seen = set()
    for rec in json_lines(out.decode(errors='replace'), name):
        seen.add(rec.get('impl'))
        print(json.dumps(rec), flush=True)
    err_text = err.decode(errors='replace').strip()
    if rc != 0 or not seen:
        tail = err_text.splitlines()[-5:] if err_text else []
        msg = 'exit %s' % rc + (': ' + ' | '.join(tail) if tail else '')
        for impl in impls:
            if impl not in seen:
                error_line(impl, msg, transport)
    elif err_text and os.environ.get('PEERS_VERBOSE'):
        sys.stderr.write(err_text + '\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=2000,
                    help='measured calls per peer (default 2000)')
    ap.add_argument('--only', action='append', metavar='NAME',
                    help='run only this peer (repeatable): ' +
                    ', '.join(p[0] for p in PEERS))
    ap.add_argument('--timeout', type=int, default=60,
                    help='seconds allowed per peer script (default 60)')
    ap.add_argument('--transport', choices=('local', 'ssh', 'docker'), default='local',
                    help='local subprocess (default), a loopback SSH fleet host, '
                    'or a fresh container per peer')
    add_container_args(ap)
    ap.add_argument('--host', help='ssh: fleet host (with --port, --key, '
                    '--known-hosts, --ssh-config; else a 1-host fleet is started)')
    ap.add_argument('--port', type=int)
    ap.add_argument('--key')
    ap.add_argument('--known-hosts')
    ap.add_argument('--ssh-config')
    args = ap.parse_args()

    peers = resolve(args.only, args.transport)
    venv_error = None
    if any(p[3] for p in peers):
        venv_error = ensure_venv()
    fleet = None
    fleet_argv = []
    try:
        if args.transport == 'ssh':
            given = {name: getattr(args, name) for name in FLEET_ARGS}
            if any(v is None for v in given.values()):
                if any(v is not None for v in given.values()):
                    ap.error('give all of --host --port --key --known-hosts '
                             '--ssh-config, or none')
                fleet = start_fleet(1)
                given = {'host': fleet.hosts[0], 'port': fleet.port, 'key': fleet.key,
                         'known_hosts': fleet.known_hosts,
                         'ssh_config': fleet.ssh_config}
            for name in FLEET_ARGS:
                fleet_argv += ['--' + name.replace('_', '-'), str(given[name])]
        for peer in peers:
            if peer[3] and venv_error:
                transport = args.transport if args.transport in peer[4] else 'local'
                for impl in peer[2]:
                    error_line(impl, venv_error, transport)
                continue
            python = PEERS_PY if os.path.exists(PEERS_PY) else sys.executable
            run_peer(peer, python, args.n, args.timeout, args.transport, fleet_argv,
                     (args.image, args.engine))
    finally:
        if fleet is not None:
            fleet.stop()


if __name__ == '__main__':
    main()
