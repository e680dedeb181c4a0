"""W2 child for the original chopsticks 1.0: Group(hosts).call(os.getpid).

cold: ``Group([FleetTunnel(h) for h in hosts]).call(os.getpid)``: 1.0's own
parallel fan-out (one OpenSSH client process per host, one select() loop).
FleetTunnel is 1.0's SSHTunnel with ``-F <fleet ssh_config>`` added after
``ssh`` (see w1_chopsticks1.py). Known limit: the loop uses select(), so past
~330 hosts (fd numbers over 1024: three pipes per host) it fails.
warm: ``group.call(os.getpid)`` again. close: ``group.close()``.
Run with the peers venv python, cwd bench/peers, PYTHONPATH=bench; speaks harness.w2's protocol.
"""
import os

from harness import w2
from w1_chopsticks1 import fleet_tunnel_class


def main():
    args = w2.parse_args(__doc__.splitlines()[0])
    import chopsticks
    if getattr(chopsticks, '__version__', None) != '1.0':
        raise SystemExit('imported the wrong chopsticks (%s)' % getattr(chopsticks, '__version__', '?'))
    import chopsticks.group
    import chopsticks.tunnel
    child = w2.Child('chopsticks-1.0', chopsticks.__version__)
    hosts = args.hosts
    tunnel_cls = fleet_tunnel_class(chopsticks.tunnel, args.ssh_config)

    def as_results(group_result):
        out = {}
        for host, r in group_result.items():
            if isinstance(r, chopsticks.tunnel.ErrorResult):
                out[host] = RuntimeError(r.msg)
            else:
                out[host] = r
        return out

    child.step('ready')
    clock = w2.Clock()
    group = chopsticks.group.Group([tunnel_cls(h) for h in hosts])
    try:
        results = as_results(group.call(os.getpid))
        cold_s, cold_cpu = clock.wall(), clock.cpu()
        ok, errors = w2.check(hosts, results)
        child.step('cold_done', cold_s=cold_s, ok=ok, errors=errors, controller_cpu_cold_s=cold_cpu)
        connected = [h for h in hosts if isinstance(results.get(h), int)]
        warm = w2.warm_rounds(child, args.warm_rounds, lambda: as_results(group.call(os.getpid)),
                              connected)
        child.step('connected', connected=len(connected), **warm)
        clock = w2.Clock()
    finally:
        group.close()
    child.result(n=len(hosts), ok=ok, errors=errors, cold_s=cold_s, controller_cpu_cold_s=cold_cpu,
                 connected=len(connected), close_s=clock.wall(), **warm)


if __name__ == '__main__':
    main()
