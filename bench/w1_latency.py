#!/usr/bin/env python3
"""W1 (call latency, local subprocess or over SSH) for this repository's chopsticks.

    .venv/bin/python bench/w1_latency.py [--n 2000] [--warmup 200] [--peers]
                                         [--transport local|ssh|docker] [--json-out FILE]
                                         [--image IMAGE] [--engine podman|docker]

``--transport ssh``: a 1-host loopback fleet (``scripts/fleet.py``: a real OpenSSH sshd,
host 127.0.0.2, an empty HOME for the login) is started for the run and stopped at the end;
ours is ``SSHTunnel('127.0.0.2', options=SSHOptions(port, key, known_hosts,
ssh_config='', agent=False))`` with remote ``python3``, and with ``--peers`` the peers
harness gets the same fleet host (``w1_peers.py --transport ssh --host ...``: mitogen
``router.ssh``, execnet ``ssh=-F <config> host``, chopsticks 1.0 ``SSHTunnel`` with
``-F <config>``, parallel-ssh ``run_command('true')``). Every line then says
``"transport": "ssh"`` (the pipe floor stays local). ``agent_cpu_us_per_call`` still
works: the agent is a process of this machine (a grandchild of the fleet's sshd), and
``sshd_cpu_us_per_call`` adds the CPU of the sshd processes serving the connection.

``--transport docker``: ours is ``Docker('w1-bench-...', image=IMAGE, engine=ENGINE)`` (a
fresh container, ``run -i --rm``; default image ``chopsticks/python:3.11``, built by
``scripts/containers``), and the floor (``"impl": "container-pipe-floor"``) is the same
8-byte ping-pong as the pipe floor, through ``ENGINE run -i --rm IMAGE python3`` echoing its
stdin: the cost the engine's own stdio relay (conmon) adds. With ``--peers`` the harness
gets ``w1_peers.py --transport docker --image IMAGE --engine ENGINE``: each peer script starts
and removes its own fresh container of IMAGE (mitogen ``router.podman`` and execnet
``popen//python=ENGINE exec -i NAME python3`` exec into a ``sleep infinity`` container;
chopsticks 1.0 uses its own ``Docker`` tunnel, ``docker run -i --rm``, with ``docker`` a
symlink to ENGINE); their lines say ``"transport": "docker"`` (the pipe floor stays
local; parallel-ssh is SSH only). ``agent_cpu_us_per_call`` is the container's PID 1
seen from here.

Run with the project venv (it has the checkout on its path; for another checkout,
PYTHONPATH=<its root>). Prints JSON lines on stdout:

* ``"impl": "chopsticks"``: ``t.call(w1_target.two)`` on a ``Local`` tunnel to
  ``/usr/bin/python3``; ``--warmup`` calls, then ``--n`` sequential calls, each timed with
  ``time.perf_counter_ns``. Same fields and statistics as the peers' lines (the timing and
  statistics code is the peers' own ``harness.w1``, so the numbers compare).
  Two extra fields split the cost: ``controller_cpu_us_per_call`` (this process's CPU,
  ``time.process_time``) and ``agent_cpu_us_per_call`` (the agent's CPU, all its threads, from
  ``/proc/<pid>/task/*/schedstat``), both over the measured calls only. Their sum against
  the median shows how much of a round trip is CPU and how much is waiting/wake-ups.
* ``"impl": "chopsticks-pipelined"``: on the same warm tunnel, ``--n`` ``call_async`` calls
  submitted at once, then all results collected; ``calls_per_s`` is ``--n`` divided by the
  time from the first submit to the last result. Three bursts; the median one is reported
  (``best_calls_per_s`` is the fastest).

Each of our runs uses a fresh tunnel. With ``--peers`` the order is: ours (run 1), the
peers harness (``bench/w1_peers.py``, a subprocess, its lines forwarded), ours (run 2), so
our numbers and the peers' come from the same minute of the same noisy machine. Without
``--peers`` only the pipe floor is taken from the harness (``--only pipe-floor``, under a
second), for the ratios; ``--no-floor`` skips it too.

At the end a markdown table goes to stderr: each impl's median and p99, the median as a
multiple of the pipe floor's median and of ours (the mean of our runs' medians).
``--json-out FILE`` also appends every line, plus ``run_at``/``host`` fields, to FILE; a
relative FILE is taken under ``bench/results/`` (gitignored).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import chopsticks
import w1_target  # the remote function, shipped by the agent's importer (bench/w1_target.py)
from chopsticks.tunnel import Docker, Local, SSHTunnel
from chopsticks.transports.ssh_options import SSHOptions
from harness.procfs import descendants, threads_cpu_s
from harness.runner import BENCH, ROOT, append_results, check_checkout, start_fleet
from harness.w1 import REMOTE_PYTHON, add_container_args, json_lines, measure, stats_us

PIPELINED_BURSTS = 3

# Asked of the remote before timing: which loader provided its w1_target. 'Importer' is
# chopsticks' remote import hook, i.e. the module came from this process, not from disk.
LOADER_PROBE = "type(__import__('sys').modules['w1_target'].__spec__.loader).__name__"


def sshd_cpu_s(fleet, agent_pid):
    """CPU seconds so far of the fleet's sshd processes serving us (the agent excluded)."""
    if fleet is None or fleet.proc is None:
        return None
    pids = [pid for pid in descendants(fleet.proc.pid) if pid != agent_pid]
    return sum(threads_cpu_s(pid) or 0.0 for pid in pids)


def out(rec, sink):
    line = json.dumps(rec)
    sys.stdout.write(line + '\n')
    sys.stdout.flush()
    sink.append(rec)


def fleet_options(fleet):
    return SSHOptions(port=fleet.port, key=fleet.key, known_hosts=fleet.known_hosts,
                      ssh_config='', agent=False)


CONTAINER_ECHO = ("import os\n"
                  "os.write(1, b'ready\\n')\n"
                  "while True:\n"
                  "    b = os.read(0, 64)\n"
                  "    if not b:\n"
                  "        break\n"
                  "    os.write(1, b)\n")


def container_floor(n, warmup, sink, image, engine):
    """The pipe floor through a container: 8 bytes echoed by python3 in ``run -i --rm``."""
    proc = subprocess.Popen([engine, 'run', '-i', '--rm', '--pull=never', image, 'python3', '-S', '-c',
                             CONTAINER_ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    try:
        if proc.stdout.read(6) != b'ready\n':
            raise RuntimeError('the echo container did not start')
        msg = b'ping1234'

        def call():
            os.write(proc.stdin.fileno(), msg)
            got = b''
            while len(got) < len(msg):
                got += os.read(proc.stdout.fileno(), len(msg) - len(got))
            return 2

        samples = measure(call, n, warmup)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
    rec = {'workload': 'W1', 'impl': 'container-pipe-floor', 'transport': 'docker', 'n': n, 'image': image}
    rec.update(stats_us(samples))
    out(rec, sink)


def open_tunnel(fleet, container):
    if fleet is not None:
        return 'ssh', SSHTunnel(fleet.hosts[0], options=fleet_options(fleet), python='python3')
    if container is not None:
        image, engine = container
        return 'docker', Docker('w1-bench-%d' % os.getpid(), image=image, engine=engine)
    return 'local', Local('w1-bench', python=REMOTE_PYTHON)


def run_ours(run, n, warmup, sink, fleet=None, container=None):
    """One fresh tunnel: sequential latency, then pipelined throughput. Returns our W1 record."""
    transport, t = open_tunnel(fleet, container)
    try:
        t.connect()
        info = t.remote_info or {}
        python = '.'.join(map(str, info.get('python', []))) or '?'
        # The first call makes the remote import w1_target from us (not timed).
        if t.call(w1_target.two) != 2:
            raise AssertionError('w1_target.two() did not return 2 on the remote')
        loader = t.call(eval, LOADER_PROBE)
        where = t.call(w1_target.origin)
        sys.stderr.write('[w1_latency] run %d: remote pid %s python %s; w1_target loaded by %s from %s\n'
                         % (run, info.get('pid'), python, loader, where))
        if loader != 'Importer':
            sys.stderr.write('[w1_latency] WARNING: the remote did not get w1_target from the '
                             'controller\n')

        call = lambda: t.call(w1_target.two)  # noqa: E731
        measure(call, 0, warmup)
        pid = info.get('pid')
        if container is not None:  # the container's PID 1, as this machine numbers it
            pid = int(subprocess.run([container[1], 'inspect', '--format', '{{.State.Pid}}', t.host],
                                     capture_output=True, text=True).stdout.strip() or 0)
        ctl0, agent0, sshd0 = time.process_time(), threads_cpu_s(pid), sshd_cpu_s(fleet, pid)
        samples = measure(call, n, 0)
        ctl1, agent1, sshd1 = time.process_time(), threads_cpu_s(pid), sshd_cpu_s(fleet, pid)
        rec = {'workload': 'W1', 'impl': 'chopsticks', 'transport': transport, 'n': n}
        rec.update(stats_us(samples))
        rec.update({'python': python, 'version': chopsticks.__version__, 'run': run,
                    'controller_cpu_us_per_call': round((ctl1 - ctl0) / n * 1e6, 1),
                    'agent_cpu_us_per_call': (round((agent1 - agent0) / n * 1e6, 1)
                                              if agent0 is not None and agent1 is not None
                                              else None)})
        if fleet is not None:
            rec['sshd_cpu_us_per_call'] = (round((sshd1 - sshd0) / n * 1e6, 1)
                                           if sshd0 is not None and sshd1 is not None else None)
        out(rec, sink)

        rates = []
        for _ in range(PIPELINED_BURSTS):
            t0 = time.perf_counter_ns()
            futures = [t.call_async(w1_target.two) for _ in range(n)]
            total = sum(f.result(60) for f in futures)
            elapsed = time.perf_counter_ns() - t0
            if total != 2 * n:
                raise AssertionError('pipelined calls returned %d, expected %d' % (total, 2 * n))
            rates.append(n / (elapsed / 1e9))
        rates.sort()
        median_rate = rates[len(rates) // 2]
        out({'workload': 'W1', 'impl': 'chopsticks-pipelined', 'transport': transport, 'n': n,
             'in_flight': n, 'calls_per_s': round(median_rate),
             'us_per_call': round(1e6 / median_rate, 1), 'best_calls_per_s': round(rates[-1]),
             'bursts': PIPELINED_BURSTS, 'python': python, 'version': chopsticks.__version__,
             'run': run}, sink)
        return rec
    finally:
        t.close()


def run_harness(n, only, sink, fleet=None, container=None):
    """Run bench/w1_peers.py as a subprocess and forward its JSON lines."""
    cmd = [sys.executable, os.path.join(BENCH, 'w1_peers.py'), '--n', str(n)]
    for name in only:
        cmd += ['--only', name]
    if fleet is not None:
        cmd += ['--transport', 'ssh', '--host', fleet.hosts[0], '--port', str(fleet.port),
                '--key', fleet.key, '--known-hosts', fleet.known_hosts,
                '--ssh-config', fleet.ssh_config]
    elif container is not None:
        image, engine = container
        cmd += ['--transport', 'docker', '--image', image, '--engine', engine]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for rec in json_lines(proc.stdout, 'peers'):
        out(rec, sink)
    if proc.returncode:
        sys.stderr.write('[w1_latency] w1_peers.py exited with status %d\n' % proc.returncode)


def table(records):
    """Markdown table of the latency records (not the throughput ones)."""
    lat = [r for r in records if 'median_us' in r]
    ours = [r['median_us'] for r in lat if r['impl'] == 'chopsticks']
    ours_mid = sum(ours) / len(ours) if ours else None
    floor = next((r['median_us'] for r in lat if r['impl'] == 'pipe-floor'), None)

    def ratio(x, base):
        return '%.2fx' % (x / base) if base else 'n/a'

    rows = ['| impl | median us | p99 us | median / floor | median / ours |',
            '| --- | ---: | ---: | ---: | ---: |']
    for r in lat:
        name = r['impl'] + (' (run %d)' % r['run'] if 'run' in r else '')
        if r.get('transport', 'local') != 'local':
            name += ', ' + r['transport']
        if r['impl'] == 'parallel-ssh':
            name += ', run_command(\'true\'), n=%d' % r['n']
        rows.append('| %s | %.1f | %.1f | %s | %s |' % (
            name, r['median_us'], r['p99_us'], ratio(r['median_us'], floor),
            ratio(r['median_us'], ours_mid)))
    for r in records:
        if 'error' in r:
            rows.append('| %s | error: %s | | | |' % (r.get('impl'), r['error'][:80]))
    for r in records:
        if 'calls_per_s' in r:
            rows.append('| %s (run %s)%s | %s calls/s = %.1f us/call, %d in flight | | | |' % (
                r['impl'], r.get('run', '?'),
                ', ' + r['transport'] if r.get('transport', 'local') != 'local' else '', r['calls_per_s'], r['us_per_call'], r['in_flight']))
    if ours_mid is not None:
        rows.append('')
        rows.append('"ours" = mean of our runs\' medians, %.1f us' % ours_mid)
    return '\n'.join(rows) + '\n'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=2000, help='measured calls (default 2000)')
    ap.add_argument('--warmup', type=int, default=200, help='warm-up calls (default 200)')
    ap.add_argument('--peers', action='store_true',
                    help='also run bench/w1_peers.py: ours, peers, ours again')
    ap.add_argument('--no-floor', action='store_true',
                    help='without --peers, do not run the pipe floor either')
    ap.add_argument('--transport', choices=('local', 'ssh', 'docker'), default='local',
                    help='local subprocess (default), a 1-host loopback sshd fleet, or a container')
    add_container_args(ap)
    ap.add_argument('--json-out', metavar='FILE',
                    help='append the JSON lines to FILE (relative: under bench/results/)')
    args = ap.parse_args()
    if args.n < 1 or args.warmup < 0:
        ap.error('--n must be >= 1 and --warmup >= 0')
    check_checkout(chopsticks)

    # Like the peers: the remote starts in '/', so it can only get w1_target from us.
    os.chdir('/')
    records = []
    fleet = start_fleet(1) if args.transport == 'ssh' else None
    container = (args.image, args.engine) if args.transport == 'docker' else None
    try:
        run_ours(1, args.n, args.warmup, records, fleet, container)
        if args.peers:
            run_harness(args.n, [], records, fleet, container)
            run_ours(2, args.n, args.warmup, records, fleet, container)
        elif not args.no_floor:
            run_harness(args.n, ['pipe-floor'], records)
        if container is not None and not args.no_floor:
            container_floor(args.n, args.warmup, records, *container)
    finally:
        if fleet is not None:
            fleet.stop()

    sys.stderr.write('\n' + table(records))

    if args.json_out:
        path = append_results(args.json_out, records)
        sys.stderr.write('[w1_latency] appended %d lines to %s\n' % (len(records), path))

if __name__ == '__main__':
    main()
