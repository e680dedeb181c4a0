"""Shared code of the W2 (fleet fan-out) child scripts: ours and the peers'.

Each W2 script is one controller process for one implementation and one fleet
size, started by ``bench/w2_fanout.py`` (the orchestrator), which owns the
fleet and measures the machine. The child talks to it in lock-step over its
stdout/stdin so that the orchestrator can read /proc at the right moments:

    child: {"phase": "ready"}            (imports done, nothing connected)
    parent: "go"                         (baseline snapshot taken)
    child:  ... cold: connect + bootstrap + os.getpid on every host at once ...
    child: {"phase": "cold_done", ...}
    parent: "go"                         (CPU snapshot taken)
    child:  ... warm rounds: os.getpid again on the connected fleet ...
    child: {"phase": "connected", ...}
    parent: "go"                         (memory snapshot taken, fleet connected)
    child:  ... close everything ...
    child: {"phase": "result", ...}      (one JSON object, the final numbers)

Every message is one JSON line on stdout; anything else a library prints must
go to stderr (``Child`` moves fd 1 to fd 2 for the rest of the process and
keeps a private copy of the real stdout). Stdlib only: runs under the peers
venv and ours.
"""
import argparse
import json
import os
import re
import resource
import sys
import time

WARM_ROUNDS = 3


def parse_args(description, extra=()):
    ap = argparse.ArgumentParser(description=description)
    for flags, kwargs in extra:
        ap.add_argument(*flags, **kwargs)
    ap.add_argument('--hosts-file', required=True, help='one fleet host per line')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--key', required=True)
    ap.add_argument('--known-hosts', required=True)
    ap.add_argument('--ssh-config', required=True)
    ap.add_argument('--timeout', type=float, default=300.0,
                    help='connect/call timeout given to the library where it takes one')
    ap.add_argument('--warm-rounds', type=int, default=WARM_ROUNDS)
    args = ap.parse_args()
    with open(args.hosts_file) as f:
        args.hosts = [line.strip() for line in f if line.strip()]
    return args


class Child:
    """The lock-step conversation with the orchestrator, and result checking."""

    def __init__(self, impl, version):
        self.impl = impl
        self.version = version
        # Keep the real stdout for our messages; everything else printed to fd 1
        # (by a library, or a remote's forwarded output) lands on stderr.
        self._out = os.fdopen(os.dup(1), 'w')
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def step(self, phase, **fields):
        """Tell the orchestrator where we are and wait for its 'go'."""
        msg = {'phase': phase}
        msg.update(fields)
        self._out.write(json.dumps(msg) + '\n')
        self._out.flush()
        line = sys.stdin.readline()
        if not line:
            raise SystemExit('orchestrator went away')

    def result(self, **fields):
        msg = {'phase': 'result', 'impl': self.impl, 'version': self.version,
               'controller_peak_rss_mib': peak_rss_mib()}
        msg.update(fields)
        self._out.write(json.dumps(msg) + '\n')
        self._out.flush()


def peak_rss_mib():
    """This process's peak RSS (getrusage ru_maxrss: KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def check(hosts, results):
    """``results``: host -> pid (int) or an exception / error text.

    Returns (ok count, error summary). The summary maps "Type: message" (first
    160 characters, with the host name replaced by <host> and port numbers by
    <port>, so that one kind of failure is one entry) to {"count",
    "first_host"}; a pid that is not an int, or one seen twice, is an error too.
    """
    ok = 0
    seen = {}
    errors = {}

    def bad(host, text):
        text = re.sub(r'port \d+', 'port <port>', text.replace(host, '<host>'))
        entry = errors.setdefault(text[:160], {'count': 0, 'first_host': host})
        entry['count'] += 1

    for host in hosts:
        if host not in results:
            bad(host, 'no result')
            continue
        r = results[host]
        if isinstance(r, BaseException):
            bad(host, '%s: %s' % (type(r).__name__, str(r).strip().splitlines()[0]
                                  if str(r).strip() else ''))
        elif isinstance(r, int) and not isinstance(r, bool):
            if r in seen:
                bad(host, 'pid %d also returned by %s' % (r, seen[r]))
            else:
                seen[r] = host
                ok += 1
        else:
            bad(host, 'unexpected result %r' % (r,))
    return ok, errors


def quantiles(finish):
    """Sorted finish times (s) -> when 10/50/90/100 % of them had finished."""
    out = {}
    if finish:
        for q in (0.1, 0.5, 0.9, 1.0):
            out['p%d' % int(q * 100)] = round(finish[min(len(finish) - 1, int(q * len(finish)))], 3)
    return out


class Clock:
    """Wall and CPU time since it was made; ``cpu_s`` says whose CPU (default: this process's,
    all threads)."""

    def __init__(self, cpu_s=time.process_time):
        self.cpu_s = cpu_s
        self.t0 = time.perf_counter()
        self.cpu0 = cpu_s()

    def wall(self):
        return round(time.perf_counter() - self.t0, 3)

    def cpu(self):
        """CPU seconds since the clock started."""
        return round(self.cpu_s() - self.cpu0, 3)


def warm_rounds(child, rounds, run_once, hosts, cpu_s=time.process_time):
    """Run ``run_once()`` (-> host->result dict) ``rounds`` times; return fields (the
    controller's CPU as ``cpu_s`` counts it)."""
    walls = []
    cpus = []
    ok_min = len(hosts)
    errors = {}
    for _ in range(rounds):
        clock = Clock(cpu_s)
        results = run_once()
        walls.append(clock.wall())
        cpus.append(clock.cpu_s() - clock.cpu0)
        ok, errs = check(hosts, results)
        ok_min = min(ok_min, ok)
        for text, entry in errs.items():
            errors.setdefault(text, entry)
    srt = sorted(walls)
    per_host = sorted(round(cpu / max(1, len(hosts)) * 1e6, 1) for cpu in cpus)
    return {'warm_s': srt[len(srt) // 2] if srt else None, 'warm_rounds_s': walls,
            'warm_controller_cpu_us_per_host': per_host[len(per_host) // 2] if per_host else None,
            'warm_controller_cpu_us_per_host_rounds': [round(cpu / max(1, len(hosts)) * 1e6, 1)
                                                       for cpu in cpus],
            'warm_ok_min': ok_min, 'warm_errors': errors}
