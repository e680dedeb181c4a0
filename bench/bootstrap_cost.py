#!/usr/bin/env python3
"""What it costs to start a chopsticks agent: bytes sent, wall time, remote CPU.

    .venv/bin/python bench/bootstrap_cost.py [--rounds 20] [--json-out FILE]

Run with the project venv (or PYTHONPATH=<repo root>). Prints JSON lines on stdout
("workload": "bootstrap"), then a short summary on stderr; about 5 s on 2 cores.

* ``stage1``: bytes of the ``python3 -c`` program (and of the whole argv).
* ``bundle``: bytes written to the agent's stdin before the first frame (length prefix +
  zlib), the uncompressed program, and the controller's one-time cost to build it.
* ``first_result``: wall time from ``Local(...)`` to the result of one ``t.call(w1_target.two)``
  on a fresh tunnel (``connect_ms``: to the agent's HELLO; the rest is the first call,
  which includes one import round trip for ``w1_target``), and the controller's own CPU
  for it. Also the wall time of ``python3 -c pass`` for scale.
* ``remote_cpu``: CPU (user+sys) of the agent process, compared with ``python3 -c pass`` and
  ``python3 -S -c pass``. Medians over ``--rounds`` rounds, the three kinds interleaved.
  ``ratio_first_result``: agent CPU to first result / ``python3 -c pass`` CPU (the goal of
  issue 13: <= 1.5); ``ratio_lifetime``: the same with the agent's whole life.
* ``stdlib_first_result``: the same agent CPU when the first call is of standard-library
  code (``os.getpid``, as in W2): no import round trip, and ``site`` never runs (the agent
  starts with ``-S`` and runs it for the first module the remote's own finders miss, as
  ``w1_target`` is).

How remote CPU is measured (two ways, because no single one is both precise and applicable
to a process that has already exited):

* ``agent_cpu_to_hello_ms`` / ``agent_cpu_to_first_result_ms``: read while the agent is alive,
  right after HELLO and right after the first result arrives, as the sum over its threads
  (``/proc/<pid>/task/*/schedstat``, field 1 = nanoseconds on a CPU, kernel scheduler
  accounting, exact). ``/proc/<pid>/stat`` utime+stime would cover exited threads too, but
  it counts in clock ticks (10 ms here), too coarse for a ~70 ms quantity. No agent thread
  exits before the first result, so the thread sum is complete (check: it stays within a
  couple of ms below the lifetime figure, which counts every thread). The agent is the direct
  child (``Local`` runs the interpreter without a shell), so ``remote_info['pid']`` is it.
* ``*_lifetime_ms``: ``getrusage(RUSAGE_CHILDREN)`` user+sys, the difference across one
  child's whole life (start to reaped): the kernel adds a child's usage, all threads, when
  it is waited for, whoever waits (gevent reaps the agent, ``subprocess`` the others). This is
  the only way to get a ``python3 -c pass`` figure, so the comparison with it is
  lifetime-to-lifetime; for the agent its lifetime also includes closing (EOF, then
  ``os._exit``) and its watchdog thread's polling for up to 0.2 s after the last call, so it is
  a little more than ``agent_cpu_to_first_result_ms``. Nothing else is reaped in between:
  everything here runs sequentially.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import chopsticks
import w1_target  # the remote function, shipped by the agent's importer (bench/w1_target.py)
from chopsticks import bootstrap
from chopsticks.tunnel import DEFAULT_MAX_RESULT, Local
from harness.procfs import thread_count, threads_cpu_s
from harness.runner import append_results, check_checkout
from harness.w1 import REMOTE_PYTHON


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def ms(x):
    return round(x, 2)


def children_cpu_s():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def one_agent(fn=w1_target.two, expect=lambda value: value == 2):
    """One fresh tunnel: connect, one call of ``fn``, close. Returns a dict of measurements."""
    cpu_before = children_cpu_s()
    ctl_before = time.process_time()
    t0 = time.perf_counter()
    t = Local('bootstrap-bench', python=REMOTE_PYTHON)
    try:
        t.connect()
        t_hello = time.perf_counter()
        pid = t.remote_info['pid']
        cpu_hello = threads_cpu_s(pid)
        value = t.call(fn)
        t_result = time.perf_counter()
        cpu_result = threads_cpu_s(pid)
        ctl_cpu = time.process_time() - ctl_before
        nthreads = thread_count(pid)
        if not expect(value):
            raise AssertionError('%s() returned %r on the remote' % (fn.__name__, value))
        python = '.'.join(map(str, t.remote_info.get('python', [])))
    finally:
        t.close()
    lifetime = children_cpu_s() - cpu_before
    return {'wall_ms': (t_result - t0) * 1e3, 'connect_ms': (t_hello - t0) * 1e3,
            'cpu_hello_ms': cpu_hello * 1e3, 'cpu_result_ms': cpu_result * 1e3,
            'lifetime_ms': lifetime * 1e3, 'controller_cpu_ms': ctl_cpu * 1e3,
            'threads': nthreads, 'python': python}


def one_plain(argv):
    cpu_before = children_cpu_s()
    t0 = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    return {'wall_ms': wall * 1e3, 'lifetime_ms': (children_cpu_s() - cpu_before) * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=20, help='rounds for the medians (default 20)')
    ap.add_argument('--json-out', metavar='FILE',
                    help='append the JSON lines to FILE (relative: under bench/results/)')
    args = ap.parse_args()
    check_checkout(chopsticks)
    os.chdir('/')  # like W1: the agent must get w1_target from us, not from its cwd
    records = []

    def out(rec):
        rec = dict({'workload': 'bootstrap'}, **rec)
        sys.stdout.write(json.dumps(rec) + '\n')
        sys.stdout.flush()
        records.append(rec)

    stage1 = bootstrap.stage1_source()
    argv = bootstrap.python_argv(REMOTE_PYTHON)
    out({'what': 'stage1', 'stage1_bytes': len(stage1.encode()),
         'argv_bytes': sum(len(a.encode()) + 1 for a in argv)})

    t0 = time.perf_counter()
    bundle = bootstrap.bundle_for(DEFAULT_MAX_RESULT)  # first call in this process: builds it
    build_ms = (time.perf_counter() - t0) * 1e3
    stdin = bundle.stdin_bytes()
    out({'what': 'bundle', 'stdin_bytes': len(stdin), 'compressed_bytes': len(bundle.payload),
         'uncompressed_bytes': bundle.size, 'build_ms': ms(build_ms)})

    # Warm-up (page cache, the controller's imports), not counted.
    for _ in range(2):
        one_agent()
        one_plain([REMOTE_PYTHON, '-c', 'pass'])

    agents, stdlib_agents, plain, plain_s = [], [], [], []
    for _ in range(args.rounds):
        agents.append(one_agent())
        stdlib_agents.append(one_agent(os.getpid, lambda value: isinstance(value, int)))
        plain.append(one_plain([REMOTE_PYTHON, '-c', 'pass']))
        plain_s.append(one_plain([REMOTE_PYTHON, '-S', '-c', 'pass']))

    def med(rows, key):
        return ms(median([r[key] for r in rows]))

    version = agents[-1]['python']
    out({'what': 'first_result', 'rounds': args.rounds, 'median_ms': med(agents, 'wall_ms'),
         'min_ms': ms(min(r['wall_ms'] for r in agents)),
         'connect_ms': med(agents, 'connect_ms'),
         'controller_cpu_ms': med(agents, 'controller_cpu_ms'),
         'python_c_pass_wall_ms': med(plain, 'wall_ms'),
         'python_S_c_pass_wall_ms': med(plain_s, 'wall_ms'),
         'python': version, 'version': chopsticks.__version__})
    out({'what': 'remote_cpu', 'rounds': args.rounds,
         'agent_cpu_to_hello_ms': med(agents, 'cpu_hello_ms'),
         'agent_cpu_to_first_result_ms': med(agents, 'cpu_result_ms'),
         'agent_cpu_lifetime_ms': med(agents, 'lifetime_ms'),
         'python_c_pass_cpu_lifetime_ms': med(plain, 'lifetime_ms'),
         'python_S_c_pass_cpu_lifetime_ms': med(plain_s, 'lifetime_ms'),
         'agent_threads_at_first_result': max(r['threads'] for r in agents),
         'ratio_first_result': round(med(agents, 'cpu_result_ms') / med(plain, 'lifetime_ms'), 2),
         'ratio_lifetime': round(med(agents, 'lifetime_ms') / med(plain, 'lifetime_ms'), 2),
         'python': version, 'version': chopsticks.__version__})
    out({'what': 'stdlib_first_result', 'rounds': args.rounds, 'call': 'os.getpid',
         'agent_cpu_to_first_result_ms': med(stdlib_agents, 'cpu_result_ms'),
         'agent_cpu_lifetime_ms': med(stdlib_agents, 'lifetime_ms'),
         'ratio_first_result': round(med(stdlib_agents, 'cpu_result_ms') / med(plain, 'lifetime_ms'), 2),
         'python': version, 'version': chopsticks.__version__})

    first, cpu, stdlib = records[-3:]
    sys.stderr.write(
        '\nagent: %.1f ms to first result (%.1f ms to HELLO); %.1f ms of CPU over its life\n'
        'remote CPU to first result: agent %.1f ms (%.1f ms if the call is os.getpid), '
        'python3 -c pass %.1f ms, python3 -S -c pass %.1f ms; agent / -c pass = %.2fx (%.2fx)\n'
        % (first['median_ms'], first['connect_ms'], cpu['agent_cpu_lifetime_ms'],
           cpu['agent_cpu_to_first_result_ms'], stdlib['agent_cpu_to_first_result_ms'],
           cpu['python_c_pass_cpu_lifetime_ms'], cpu['python_S_c_pass_cpu_lifetime_ms'],
           cpu['ratio_first_result'], stdlib['ratio_first_result']))

    if args.json_out:
        path = append_results(args.json_out, records)
        sys.stderr.write('[bootstrap_cost] appended %d lines to %s\n' % (len(records), path))

if __name__ == '__main__':
    main()
