#!/usr/bin/env python3
"""W2 child for this repository's chopsticks: one controller process, N fleet hosts.

Started by ``bench/w2_fanout.py`` with the project venv (cwd = repo root); speaks the
lock-step protocol of ``bench/harness/w2.py``.

cold: ``Group(hosts, options=SSHOptions(port, key, known_hosts, ssh_config='', agent=False),
python='python3').call(os.getpid)`` (connect + bootstrap + call on every host), through the
Group's pool at its default concurrency; the library bounds concurrent handshakes itself
(its default ``HandshakeSlots``). Everything else is the library's defaults (connect timeout
included), as a user would get them, unless ``--connect-timeout S`` is given: then
``Group(connect_timeout=S)`` and ``SSHOptions(connect_timeout=S)`` (the TCP connect's own
limit). The callback records when each host's result arrived. ``--workers N``: the same
``Group`` with ``workers=N`` (shard processes); the controller's CPU it reports is then this
process's and its shards' (its descendants', read from /proc).
warm: ``group.select(answered cold).call(os.getpid)`` again, ``--warm-rounds`` times.
close: ``group.close()``.
"""

import os
import time

import chopsticks
from chopsticks import ErrorResult, Group
from chopsticks.transports.ssh_options import SSHOptions
from harness import procfs, runner, w2


def tree_cpu():
    """CPU seconds of this process and of its live descendants (the shards)."""
    return time.process_time() + sum(procfs.threads_cpu_s(pid) or 0.0 for pid in procfs.descendants(os.getpid()))


def main():
    args = w2.parse_args(__doc__.splitlines()[0], extra=[
        (('--connect-timeout',), {'type': float, 'default': None,
                                  'help': "the tunnels' connect timeout (default: the library's)"}),
        (('--workers',), {'type': int, 'default': 1, 'help': 'shard processes (default 1: none)'})])
    runner.check_checkout(chopsticks)
    child = w2.Child('chopsticks', chopsticks.__version__)
    hosts = args.hosts
    timeouts = {}
    if args.connect_timeout:
        timeouts = {'connect_timeout': args.connect_timeout}
    opts = SSHOptions(port=args.port, key=args.key, known_hosts=args.known_hosts,
                      ssh_config='', agent=False, **timeouts)

    def fan_out(group, finish_times, t0):
        """group.call(os.getpid): host -> pid, or the failure's text."""
        def arrived(host, result):
            finish_times.append(time.perf_counter() - t0)

        result = group.call(os.getpid, deadline=args.timeout, callback=arrived)
        return {host: value.msg if isinstance(value, ErrorResult) else value for host, value in result.items()}

    child.step('ready')
    clock = w2.Clock(tree_cpu)
    finish = []
    group = Group(hosts, options=opts, python='python3', workers=args.workers, **timeouts)
    results = fan_out(group, finish, clock.t0)
    cold_s, cold_cpu = clock.wall(), clock.cpu()
    ok, errors = w2.check(hosts, results)
    finish.sort()
    quantiles = w2.quantiles(finish)
    child.step('cold_done', cold_s=cold_s, ok=ok, errors=errors, controller_cpu_cold_s=cold_cpu,
               cold_finish_s=quantiles)

    connected = group.select(lambda t: isinstance(results.get(t.host), int))
    warm = w2.warm_rounds(child, args.warm_rounds,
                          lambda: fan_out(connected, [], time.perf_counter()),
                          [t.host for t in connected], tree_cpu)
    child.step('connected', connected=len(connected), **warm)

    clock = w2.Clock()
    group.close()
    close_s = clock.wall()
    child.result(connect_timeout=args.connect_timeout or 'default', workers=args.workers, n=len(hosts), ok=ok,
                 errors=errors,
                 cold_s=cold_s, controller_cpu_cold_s=cold_cpu, cold_finish_s=quantiles,
                 connected=len(connected), close_s=close_s, **warm)


if __name__ == '__main__':
    main()
