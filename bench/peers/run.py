#!/usr/bin/env python3
"""Run the W1 (call latency, local subprocess) peer benchmarks.

Creates the peers venv with setup_env.sh if it is missing, then runs each
peer script with the venv's python, cwd = bench/peers (so our own
``chopsticks`` package in the repo root is not importable by the chopsticks
1.0 script), and forwards their JSON lines to stdout. A peer that fails
gets one JSON line with an "error" key instead; the others still run.

    python3 bench/peers/run.py [--n 2000] [--only mitogen --only execnet ...]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.environ.get('PEERS_VENV') or os.path.join(os.path.dirname(HERE),
                                                   '.peers-venv')
VPY = os.path.join(VENV, 'bin', 'python')

# name -> (script, impl names it reports, needs the venv)
PEERS = [
    ('pipe-floor', 'w1_pipe_floor.py', ['pipe-floor'], False),
    ('mitogen', 'w1_mitogen.py', ['mitogen'], True),
    ('execnet', 'w1_execnet.py', ['execnet-remote_exec', 'execnet-channel'], True),
    ('chopsticks-1.0', 'w1_chopsticks1.py', ['chopsticks-1.0'], True),
]
ALIASES = {'pipe_floor': 'pipe-floor', 'floor': 'pipe-floor',
           'chopsticks1': 'chopsticks-1.0', 'chopsticks': 'chopsticks-1.0'}


def error_line(impl, msg):
    print(json.dumps({'workload': 'W1', 'impl': impl, 'transport': 'local',
                      'error': msg}), flush=True)


def resolve(only):
    if not only:
        return PEERS
    wanted = set()
    for name in only:
        name = ALIASES.get(name, name)
        hits = [p for p in PEERS if name == p[0] or name in p[2]]
        if not hits:
            sys.exit('run.py: unknown peer %r; choose from %s' % (
                name, ', '.join(p[0] for p in PEERS)))
        wanted.update(p[0] for p in hits)
    return [p for p in PEERS if p[0] in wanted]


def ensure_venv():
    """Return None when the venv is usable, else an error message."""
    if os.path.exists(VPY):
        return None
    r = subprocess.run(['bash', os.path.join(HERE, 'setup_env.sh')],
                       stdout=sys.stderr)
    if r.returncode != 0 or not os.path.exists(VPY):
        return 'setup_env.sh failed (exit %d)' % r.returncode
    return None


def run_peer(peer, python, n, timeout):
    name, script, impls, _ = peer
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)  # keep the repo root off the peers' sys.path
    env.pop('PYTHONHOME', None)
    try:
        r = subprocess.run([python, os.path.join(HERE, script), '--n', str(n)],
                           cwd=HERE, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, err, rc = e.stdout or b'', e.stderr or b'', 'timeout %ds' % timeout
    seen = set()
    for line in out.decode(errors='replace').splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            sys.stderr.write('[%s] %s\n' % (name, line))
            continue
        seen.add(rec.get('impl'))
        print(json.dumps(rec), flush=True)
    err_text = err.decode(errors='replace').strip()
    if rc != 0 or not seen:
        tail = err_text.splitlines()[-5:] if err_text else []
        msg = 'exit %s' % rc + (': ' + ' | '.join(tail) if tail else '')
        for impl in impls:
            if impl not in seen:
                error_line(impl, msg)
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
    args = ap.parse_args()

    peers = resolve(args.only)
    venv_error = None
    if any(p[3] for p in peers):
        venv_error = ensure_venv()
    for peer in peers:
        if peer[3] and venv_error:
            for impl in peer[2]:
                error_line(impl, venv_error)
            continue
        python = VPY if os.path.exists(VPY) else sys.executable
        run_peer(peer, python, args.n, args.timeout)


if __name__ == '__main__':
    main()
