#!/usr/bin/env python3
"""W2 (fleet fan-out) over a loopback sshd fleet: ours, and with --peers the peers.

    .venv/bin/python bench/w2_fanout.py [--sizes 10,100,300,1000] [--peers]
        [--peers-max 300] [--only IMPL ...] [--timeout 300] [--timeline 1.0]
        [--json-out FILE]

For each fleet size N (``--sizes``) a fleet of N hosts is started (``scripts/fleet.py``: one
OpenSSH sshd on loopback answering as 127.0.0.2, 127.0.0.3, ...; logins get an empty HOME)
and every implementation is run against it in turn, each as its own controller process:

* ``chopsticks`` (ours, ``bench/w2_ours.py``, project venv), and with ``--peers``:
  ``mitogen``, ``execnet``, ``chopsticks-1.0``, ``parallel-ssh``
  (``bench/peers/w2_*.py``, peers venv, cwd ``bench/peers``, ``PYTHONPATH=bench``), then ours
  again (``"run": 2``), so that drift on this shared machine shows. Peers run only for
  N <= ``--peers-max`` (default 300); ours for every size asked.

What one implementation's run measures (the child does the work, this process watches the
machine; they step in lock-step, see ``bench/harness/w2.py``; everything read from /proc
is ``bench/harness/procfs.py``):

* ``cold_s``: wall time in the controller from nothing (tunnel objects not yet made;
  imports done) to every host having returned ``os.getpid()``: connect, authenticate,
  bootstrap, call, all hosts at once. ``ok`` hosts returned a distinct int pid; the others
  are summarised in ``errors`` (message -> count, first host).
* ``warm_s``: the same call again on the connected fleet (median of 3 rounds).
* ``warm_controller_cpu_us_per_host``: the child's ``time.process_time()`` (all its threads)
  over one warm round divided by the number of hosts in it, in µs: median of the rounds
  (``..._rounds``: each round). For the peers that run OpenSSH clients, their CPU is not in it.
* ``cpu_ms_per_host``: machine CPU for the cold phase divided by N: the busy jiffies
  (user+nice+system+irq+softirq, i.e. everything but idle/iowait/steal) of ALL CPUs from
  ``/proc/stat``, read just before the child is told to start and just after it reports.
  So it includes every process on the machine (controller, ssh clients, sshd, remote
  pythons, kernel) and any noise from other users of this shared machine.
* ``cpu_split_ms_per_host``: the same phase split by process, snapshotted at the same two
  moments over every live process in two trees: ``controller`` (the child process),
  ``controller_children`` (its descendants: the OpenSSH clients of mitogen, execnet and
  chopsticks 1.0), ``sshd`` (the fleet's sshd processes, including the pre-auth children
  they reaped), ``remote`` (every non-sshd process under the fleet's sshd: the remote
  python3s, plus commands that already exited, counted through the session sshd's
  cutime), and ``other`` = machine - the four. A live process counts with its exact CPU
  (the sum of ``/proc/<pid>/task/*/schedstat``, or ``/proc/<pid>/stat`` utime+stime when
  exited threads make that larger); reaped children only exist as ``cutime+cstime`` in
  10 ms ticks, truncated, so ``other`` holds ~5-10 ms per host of that truncation (the
  pre-auth sshd child of each session) besides the kernel, this process and any noise.
  (With ticks alone the loss was ~25 ms per host, a quarter of the total.)
  ``machine_cpu_ms_per_host`` splits the machine figure by ``/proc/stat`` field
  (user, system, softirq...) and gives the kernel threads' share.
* ``mem_mib_per_host``: MemAvailable (``/proc/meminfo``) before the cold phase minus
  MemAvailable while the whole fleet is connected (after the warm rounds), divided by N:
  what one connected host costs the machine (controller share + ssh client + sshd +
  remote agent); noisy at small N (other processes' memory moves by tens of MiB).
  ``pss_mib_per_host`` is the PSS sum per category at that moment / N (proportional set
  size, ``/proc/<pid>/smaps_rollup``: shared pages split among the processes using them;
  page tables and kernel memory such as socket buffers are not in it), and
  ``rss_mib_per_host`` the RSS sum (shared pages counted in every process: an upper
  bound).
* ``controller_peak_rss_mib``: the child's own ``getrusage(RUSAGE_SELF).ru_maxrss``.
* ``controller_cpu_cold_s``: the child's ``time.process_time()`` over the cold phase.
* ``cold_finish_s`` (ours, mitogen, execnet): when the 10/50/90/100 % of hosts finished,
  seconds from the start.

Between implementations, all connections of the previous one are closed and every sshd
session process is gone (waited for, up to 60 s, then killed) before the next starts.
Every implementation gets ``--timeout`` seconds (default 300) for the whole run and is
killed (its process group and every descendant, by pid) past it; a failure or a kill is an
``"error"`` line, and the run goes on. At N >= 1000 an implementation is skipped (error
line) when MemAvailable is under ``--min-avail-gib`` (20) before it starts, and any
implementation is killed if MemAvailable falls under ``--mem-guard-gib`` (1.5) while it
runs. ``--timeline S`` prints, every S seconds of each cold phase, machine busy %, the CPU
split and the number of sshd / remote processes to stderr (and keeps it in the JSON line).

JSON lines (one per implementation and N) go to stdout; tables to stderr.
``--json-out FILE`` appends the lines (plus run_at, host, machine) to FILE (relative:
under ``bench/results/``). Children's stderr goes to a log directory named on stderr.
"""

import argparse
import json
import os
import platform
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time

from harness.procfs import (MACHINE_FIELDS, PAGE, cmdline, cpu_model, descendants, kernel_threads_cpu,
                            machine_busy_s, machine_cpu, mem_available, pss, read_procs)
from harness.runner import BENCH, PEERS, PEERS_PY, ROOT, append_results, peers_env, start_fleet

GIB = 1 << 30
MIB = 1 << 20

# impl -> (script, uses the peers venv)
IMPLS = {
    'chopsticks': (os.path.join(BENCH, 'w2_ours.py'), False),
    'mitogen': (os.path.join(PEERS, 'w2_mitogen.py'), True),
    'execnet': (os.path.join(PEERS, 'w2_execnet.py'), True),
    'chopsticks-1.0': (os.path.join(PEERS, 'w2_chopsticks1.py'), True),
    'parallel-ssh': (os.path.join(PEERS, 'w2_pssh.py'), True),
}
PEER_ORDER = ['mitogen', 'execnet', 'chopsticks-1.0', 'parallel-ssh']
CATEGORIES = ('controller', 'controller_children', 'sshd', 'remote')


def log(msg):
    sys.stderr.write('[w2] %s\n' % msg)
    sys.stderr.flush()


# -- the process trees ------------------------------------------------------------------------


def snapshot(controller_pid, fleet_pid, with_pss=False):
    """CPU seconds (cumulative), RSS (and PSS) and counts per category; see the module
    docstring."""
    procs = read_procs(precise=True)
    cpu = dict.fromkeys(CATEGORIES, 0.0)
    rss = dict.fromkeys(CATEGORIES, 0)
    pss_sum = dict.fromkeys(CATEGORIES, 0)
    count = dict.fromkeys(CATEGORIES, 0)

    def add(cat, pid, seconds, with_rss=True):
        cpu[cat] += seconds
        if with_rss:
            rss[cat] += procs[pid][4]
            if with_pss:
                pss_sum[cat] += pss(pid)
            count[cat] += 1

    if controller_pid in procs:
        _, _, own, reaped, _ = procs[controller_pid]
        add('controller', controller_pid, own)
        cpu['controller_children'] += reaped
        for pid in descendants(controller_pid, procs):
            _, _, own, reaped, _ = procs[pid]
            add('controller_children', pid, own + reaped)
    if fleet_pid in procs:
        _, _, own, reaped, _ = procs[fleet_pid]
        cpu['sshd'] += own + reaped  # the listener, and whole sessions it reaped (rare)
        for pid in descendants(fleet_pid, procs):
            _, comm, own, reaped, _ = procs[pid]
            if comm == 'sshd':
                add('sshd', pid, own)
                # The user session process ("sshd: user@notty") reaps the command it ran;
                # the others ([priv]) reap pre-auth children, which are sshd work.
                cpu['remote' if '@notty' in cmdline(pid) else 'sshd'] += reaped
            else:
                add('remote', pid, own + reaped)
    return {'cpu': cpu, 'rss': rss, 'pss': pss_sum, 'count': count}


# -- the fleet -----------------------------------------------------------------------------


def fleet_sessions(fleet):
    return descendants(fleet.proc.pid) if fleet.proc else []


def drain_fleet(fleet, timeout=60.0):
    """Wait until the fleet's sshd has no session left; kill stragglers past ``timeout``.
    Returns how many had to be killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not fleet_sessions(fleet):
            return 0
        time.sleep(0.2)
    left = fleet_sessions(fleet)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    return len(left)


# -- one implementation ----------------------------------------------------------------------


class ChildFailed(Exception):
    pass


class Run:
    """One implementation against one fleet: the child process and the watching."""

    def __init__(self, impl, fleet, hosts_file, args, logdir, run_no, workers=1):
        self.impl = impl
        self.fleet = fleet
        self.args = args
        self.n = len(fleet.hosts)
        script, peer = IMPLS[impl]
        python = PEERS_PY if peer else sys.executable
        argv = [python, script, '--hosts-file', hosts_file, '--port', str(fleet.port),
                '--key', fleet.key, '--known-hosts', fleet.known_hosts,
                '--ssh-config', fleet.ssh_config, '--timeout', str(args.timeout)]
        if impl == 'chopsticks' and args.ours_connect_timeout:
            argv += ['--connect-timeout', str(args.ours_connect_timeout)]
        if workers != 1:
            argv += ['--workers', str(workers)]
        env = peers_env() if peer else None
        self.log_path = os.path.join(logdir, '%s-%d-run%d-w%d.stderr' % (impl, self.n, run_no, workers))
        self._log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(argv, cwd=PEERS if peer else ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, start_new_session=True)
        self.deadline = time.monotonic() + args.timeout
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b''
        self.killed_for = None
        self.in_cold = False
        self.timeline = []
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, daemon=True)
        self._monitor.start()

    # the monitor: memory guard, deadline, timeline
    def _watch(self):
        step = 0.5
        timeline_every = self.args.timeline
        next_sample = None
        prev = None
        while not self._stop.wait(step):
            avail = mem_available()
            if avail < self.args.mem_guard_gib * GIB:
                self.kill('MemAvailable fell to %.2f GiB (guard %.1f GiB)' % (avail / GIB,
                                                                             self.args.mem_guard_gib))
                return
            if time.monotonic() > self.deadline:
                self.kill('timeout: still running after %ds' % self.args.timeout)
                return
            if timeline_every and self.in_cold:
                now = time.monotonic()
                if next_sample is None or now >= next_sample:
                    next_sample = now + timeline_every
                    busy = machine_busy_s()
                    snap = snapshot(self.proc.pid, self.fleet.proc.pid)
                    if prev is not None:
                        dt = now - prev[0]
                        point = {'t': round(now - self.cold_started, 1),
                                 'machine_pct': round(100 * (busy - prev[1]) / dt),
                                 'mem_avail_gib': round(avail / GIB, 2)}
                        for cat in CATEGORIES:
                            point[cat + '_pct'] = round(100 * (snap['cpu'][cat] - prev[2]['cpu'][cat]) / dt)
                        point['n_sshd'] = snap['count']['sshd']
                        point['n_remote'] = snap['count']['remote']
                        point['n_ctl_children'] = snap['count']['controller_children']
                        self.timeline.append(point)
                        log('%s N=%d t=%5.1fs machine %3d%% | ctl %3d%% ssh-cli %3d%% sshd %3d%% '
                            'remote %3d%% | sshd procs %d, remote procs %d, mem avail %.1f GiB' % (
                                self.impl, self.n, point['t'], point['machine_pct'],
                                point['controller_pct'], point['controller_children_pct'],
                                point['sshd_pct'], point['remote_pct'], point['n_sshd'],
                                point['n_remote'], point['mem_avail_gib']))
                    prev = (now, busy, snap)

    def kill(self, why):
        if self.killed_for is None:
            self.killed_for = why
        log('%s N=%d: killing it: %s' % (self.impl, self.n, why))
        victims = descendants(self.proc.pid)  # some (1.0's ssh) leave the group
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def read_msg(self):
        while b'\n' not in self._buf:
            left = self.deadline - time.monotonic()
            if self.killed_for or left <= 0:
                raise ChildFailed(self.killed_for or 'timeout')
            if not self._sel.select(min(left, 1.0)):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise ChildFailed(self.killed_for or 'exited (status %s)' % self.proc.wait())
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b'\n')
        try:
            return json.loads(line)
        except ValueError:
            raise ChildFailed('unexpected output: %r' % line[:200]) from None

    def expect(self, phase):
        msg = self.read_msg()
        if msg.get('phase') != phase:
            raise ChildFailed('expected phase %r, got %r' % (phase, msg))
        return msg

    def go(self):
        try:
            self.proc.stdin.write(b'go\n')
            self.proc.stdin.flush()
        except OSError as exc:
            raise ChildFailed('cannot write to it: %s' % exc) from exc

    def stderr_tail(self, lines=6):
        try:
            with open(self.log_path, 'rb') as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - 8192))
                text = f.read().decode(errors='replace')
        except OSError:
            return ''
        return ' | '.join(text.strip().splitlines()[-lines:])

    def execute(self):
        """The lock-step run; returns the record (raises ChildFailed)."""
        n = self.n
        self.expect('ready')
        base = snapshot(self.proc.pid, self.fleet.proc.pid)
        avail0 = mem_available()
        kernel0 = kernel_threads_cpu()
        mach0 = machine_cpu()
        self.cold_started = time.monotonic()
        self.in_cold = True
        self.go()
        cold = self.expect('cold_done')
        mach1 = machine_cpu()
        kernel1 = kernel_threads_cpu()
        busy0, busy1 = machine_busy_s(mach0), machine_busy_s(mach1)
        self.in_cold = False
        after = snapshot(self.proc.pid, self.fleet.proc.pid)
        self.go()
        conn = self.expect('connected')
        avail1 = mem_available()
        held = snapshot(self.proc.pid, self.fleet.proc.pid, with_pss=True)
        self.go()
        res = self.expect('result')
        machine = busy1 - busy0
        split = {cat: after['cpu'][cat] - base['cpu'][cat] for cat in CATEGORIES}
        split['other'] = machine - sum(split.values())
        fields = {name: mach1[name] - mach0[name] for name in MACHINE_FIELDS if name != 'idle'}
        fields['kernel_threads'] = kernel1 - kernel0
        rec = {'workload': 'W2', 'impl': self.impl, 'version': res.get('version'),
               'transport': 'ssh', 'n': n, 'ok': cold.get('ok'), 'cold_s': cold.get('cold_s'),
               'warm_s': conn.get('warm_s'), 'warm_rounds_s': conn.get('warm_rounds_s'),
               'warm_controller_cpu_us_per_host': conn.get('warm_controller_cpu_us_per_host'),
               'warm_controller_cpu_us_per_host_rounds': conn.get('warm_controller_cpu_us_per_host_rounds'),
               'warm_ok_min': conn.get('warm_ok_min'), 'close_s': res.get('close_s'),
               'cpu_ms_per_host': round(machine / n * 1000, 1),
               'cpu_split_ms_per_host': {k: round(v / n * 1000, 1) for k, v in split.items()},
               'machine_cpu_ms_per_host': {k: round(v / n * 1000, 1) for k, v in fields.items()},
               'controller_cpu_cold_s': cold.get('controller_cpu_cold_s'),
               'controller_peak_rss_mib': res.get('controller_peak_rss_mib'),
               'mem_mib_per_host': round((avail0 - avail1) / n / MIB, 2),
               'rss_mib_per_host': {k: round(v / n / MIB, 2) for k, v in held['rss'].items()},
               'pss_mib_per_host': {k: round(v / n / MIB, 2) for k, v in held['pss'].items()},
               'procs_connected': held['count'],
               'mem_available_gib_before': round(avail0 / GIB, 2),
               'connected': conn.get('connected')}
        if 'connect_timeout' in res:
            rec['connect_timeout'] = res['connect_timeout']
        if cold.get('cold_finish_s'):
            rec['cold_finish_s'] = cold['cold_finish_s']
        if cold.get('errors'):
            rec['errors'] = cold['errors']
        if conn.get('warm_errors'):
            rec['warm_errors'] = conn['warm_errors']
        if self.timeline:
            rec['timeline'] = self.timeline
        try:
            self.proc.wait(max(1.0, min(60.0, self.deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            self.kill('did not exit after its result')
            self.proc.wait()
        return rec

    def finish(self):
        self._stop.set()
        self._monitor.join(5)
        if self.proc.poll() is None:
            self.kill(self.killed_for or 'still running at the end')
            self.proc.wait()
        self._sel.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._log.close()


def run_impl(impl, fleet, hosts_file, args, logdir, run_no, workers=1):
    n = len(fleet.hosts)
    base = {'workload': 'W2', 'impl': impl, 'transport': 'ssh', 'n': n}
    if run_no > 1:
        base['run'] = run_no
    if workers != 1:
        base['workers'] = workers
    if IMPLS[impl][1] and not os.path.exists(PEERS_PY):
        return dict(base, error='the peers venv is missing: run bench/peers/setup_env.sh')
    if n >= 1000:
        avail = mem_available()
        if avail < args.min_avail_gib * GIB:
            return dict(base, error='skipped: MemAvailable %.1f GiB < %.0f GiB before starting'
                        % (avail / GIB, args.min_avail_gib))
    log('%s N=%d: starting (MemAvailable %.1f GiB)' % (impl, n, mem_available() / GIB))
    run = Run(impl, fleet, hosts_file, args, logdir, run_no, workers)
    try:
        rec = run.execute()
        rec.update({k: v for k, v in base.items() if k in ('run', 'workers')})
    except ChildFailed as exc:
        rec = dict(base, error='%s%s' % (exc, ('; stderr: ' + run.stderr_tail()) if run.stderr_tail() else ''))
        rec['log'] = run.log_path
    finally:
        run.finish()
    killed = drain_fleet(fleet)
    if killed:
        rec['lingering_sessions_killed'] = killed
        log('%s N=%d: %d sshd session processes were still there after 60 s; killed'
            % (impl, n, killed))
    return rec


# -- output --------------------------------------------------------------------------------------


def fmt(x, spec='%.2f'):
    return spec % x if isinstance(x, (int, float)) else '-'


def label(r):
    """An implementation's name in the tables: ours says its workers when it had shards."""
    return r['impl'] + (' workers=%d' % r['workers'] if r.get('workers') else '')


def table(records):
    rows = ['| impl | N | ok | cold s | warm s | warm ctl CPU us/host | CPU ms/host (ctl / ssh-cli / sshd / '
            'remote / other) | mem MiB/host | ctl peak RSS MiB | ctl CPU cold s |',
            '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |']
    for r in records:
        name = label(r) + (' (run %d)' % r['run'] if r.get('run') else '')
        if r.get('connect_timeout') not in (None, 'default'):
            name += ' (connect_timeout=%g)' % r['connect_timeout']
        if 'error' in r:
            rows.append('| %s | %d | error | %s | | | | | | |' % (name, r['n'], r['error'][:140].replace('|', '/')))
            continue
        s = r['cpu_split_ms_per_host']
        rows.append('| %s | %d | %s/%d | %s | %s | %s | %s (%s / %s / %s / %s / %s) | %s | %s | %s |' % (
            name, r['n'], r['ok'], r['n'], fmt(r['cold_s']), fmt(r['warm_s'], '%.3f'),
            fmt(r['warm_controller_cpu_us_per_host'], '%.0f'),
            fmt(r['cpu_ms_per_host'], '%.1f'), fmt(s['controller'], '%.1f'),
            fmt(s['controller_children'], '%.1f'), fmt(s['sshd'], '%.1f'), fmt(s['remote'], '%.1f'),
            fmt(s['other'], '%.1f'), fmt(r['mem_mib_per_host'], '%.1f'),
            fmt(r['controller_peak_rss_mib'], '%.0f'), fmt(r['controller_cpu_cold_s'])))
    # the BENCHMARKS.md shape: cold per N, and warm / CPU / memory at the largest N
    sizes = sorted({r['n'] for r in records})
    impls = []
    for r in records:
        if label(r) not in impls:
            impls.append(label(r))
    rows += ['', '| impl | cold %s hosts, s | warm at largest N, s | CPU ms/host, cold, largest N '
             '| mem MiB/host, largest N |' % ' / '.join(map(str, sizes)),
             '| --- | --- | --- | --- | --- |']
    for impl in impls:
        cells = []
        last = None
        for n in sizes:
            hits = [r for r in records if label(r) == impl and r['n'] == n]
            good = [r for r in hits if 'error' not in r]
            if good:
                cells.append('/'.join(fmt(r['cold_s']) for r in good)
                             + ('' if all(r['ok'] == n for r in good) else ' (%s ok)' % '/'.join(str(r['ok']) for r in good)))
                last = good[-1]
            elif hits:
                cells.append('error')
            else:
                cells.append('-')
        rows.append('| %s | %s | %s | %s | %s |' % (
            impl, ' / '.join(cells), fmt(last and last['warm_s'], '%.3f') + (' (N=%d)' % last['n'] if last else ''),
            fmt(last and last['cpu_ms_per_host'], '%.1f'), fmt(last and last['mem_mib_per_host'], '%.1f')))
    return '\n'.join(rows) + '\n'


def machine_line():
    return '%d CPU %s, %.1f GiB, Linux %s' % (os.cpu_count() or 0, cpu_model(),
                                                os.sysconf('SC_PHYS_PAGES') * PAGE / GIB, platform.release())


def positive_ints(ap, flag, text):
    """``text``'s comma-separated positive integers; a usage error naming ``flag`` otherwise."""
    try:
        values = [int(x) for x in text.split(',') if x.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        ap.error('%s takes positive integers, comma-separated, e.g. 1,2' % flag)
    return values


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', default='10,100,300,1000',
                    help='fleet sizes, comma-separated (default 10,100,300,1000)')
    ap.add_argument('--peers', action='store_true', help='also run the peers (and ours twice)')
    ap.add_argument('--peers-max', type=int, default=300,
                    help='largest N the peers run at (default 300)')
    ap.add_argument('--only', action='append', metavar='IMPL',
                    help='run only these implementations (repeatable): ' + ', '.join(IMPLS))
    ap.add_argument('--timeout', type=int, default=300,
                    help='seconds allowed to one implementation at one N (default 300)')
    ap.add_argument('--ours-connect-timeout', type=float, metavar='S',
                    help="give our tunnels this connect timeout (default: the library's own)")
    ap.add_argument('--min-avail-gib', type=float, default=20.0,
                    help='at N >= 1000, skip an implementation when MemAvailable is below this')
    ap.add_argument('--mem-guard-gib', type=float, default=1.5,
                    help='kill an implementation when MemAvailable falls below this')
    ap.add_argument('--timeline', type=float, default=0.0, metavar='S',
                    help='sample the machine every S seconds during each cold phase')
    ap.add_argument('--workers', default='1', metavar='LIST',
                    help="ours with each of these shard counts, comma-separated (default 1: no shards)")
    ap.add_argument('--json-out', metavar='FILE',
                    help='append the JSON lines to FILE (relative: under bench/results/)')
    args = ap.parse_args()
    sizes = positive_ints(ap, '--sizes', args.sizes)
    workers = positive_ints(ap, '--workers', args.workers)
    for impl in args.only or []:
        if impl not in IMPLS:
            ap.error('unknown implementation %r; choose from %s' % (impl, ', '.join(IMPLS)))

    # a plain kill of this process still stops the fleet (and the child) in the finally blocks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logdir = tempfile.mkdtemp(prefix='w2-logs-')
    log('machine: %s; children\'s stderr in %s' % (machine_line(), logdir))
    records = []

    def emit(rec):
        sys.stdout.write(json.dumps(rec) + '\n')
        sys.stdout.flush()
        records.append(rec)

    for n in sizes:
        plan = [('chopsticks', 1, w) for w in workers]
        if args.peers and n <= args.peers_max:
            plan += [(p, 1, 1) for p in PEER_ORDER] + [('chopsticks', 2, w) for w in workers]
        if args.only:
            plan = [(impl, run, w) for impl, run, w in plan if impl in args.only]
        if not plan:
            continue
        log('N=%d: starting a fleet of %d hosts' % (n, n))
        fleet = start_fleet(n, timeout=60.0)
        try:
            hosts_file = os.path.join(logdir, 'hosts-%d.txt' % n)
            with open(hosts_file, 'w') as f:
                f.write('\n'.join(fleet.hosts) + '\n')
            for impl, run_no, w in plan:
                rec = run_impl(impl, fleet, hosts_file, args, logdir, run_no, w)
                emit(rec)
                if 'error' in rec:
                    log('%s N=%d: ERROR %s' % (impl, n, rec['error'][:400]))
                else:
                    log('%s N=%d: cold %.2f s (%d/%d ok), warm %.3f s (controller %.0f us CPU/host), '
                        '%.1f ms CPU/host, %.1f MiB/host'
                        % (impl, n, rec['cold_s'], rec['ok'], n, rec['warm_s'] or -1,
                           rec['warm_controller_cpu_us_per_host'] or -1,
                           rec['cpu_ms_per_host'], rec['mem_mib_per_host']))
        finally:
            fleet.stop()

    sys.stderr.write('\n' + table(records))
    if args.json_out:
        path = append_results(args.json_out, records, machine=machine_line())
        log('appended %d lines to %s' % (len(records), path))


if __name__ == '__main__':
    main()
