"""W2 child for execnet: an ssh gateway to every fleet host at once, then os.getpid.

cold: one thread per host (makegateway blocks), all started at once, each doing
``gw = group.makegateway('ssh=-F <fleet ssh_config> <host>//python=python3')``
then ``gw.remote_exec('import os; channel.send(os.getpid())').receive()``, on one
``execnet.Group``. execnet runs one OpenSSH client process per host.
warm: a remote_exec of the same source on every gateway, then every receive().
close: ``group.terminate(timeout)``.
Run with the peers venv python; speaks _w2common's lock-step protocol.
"""
import _w2common as w2
from _w1common import dist_version
from _w2threads import fan_out, quantiles

SOURCE = 'import os; channel.send(os.getpid())'


def main():
    args = w2.parse_args(__doc__.splitlines()[0])
    import execnet
    child = w2.Child('execnet', dist_version('execnet'))
    hosts = args.hosts
    group = execnet.Group()
    gateways = {}

    def connect_and_call(host):
        gw = group.makegateway('ssh=-F %s %s//python=python3' % (args.ssh_config, host))
        gateways[host] = gw
        return gw.remote_exec(SOURCE).receive(args.timeout)

    try:
        child.step('ready')
        clock = w2.Clock()
        results, finish = fan_out(hosts, connect_and_call, clock.t0)
        cold_s, cold_cpu = clock.wall(), clock.cpu()
        ok, errors = w2.check(hosts, results)
        child.step('cold_done', cold_s=cold_s, ok=ok, errors=errors, controller_cpu_cold_s=cold_cpu,
                   cold_finish_s=quantiles(finish))
        connected = [h for h in hosts if h in gateways and isinstance(results.get(h), int)]

        def warm_once():
            chans = [(h, gateways[h].remote_exec(SOURCE)) for h in connected]
            out = {}
            for h, ch in chans:
                try:
                    out[h] = ch.receive(args.timeout)
                except Exception as exc:
                    out[h] = exc
            return out

        warm = w2.warm_rounds(child, args.warm_rounds, warm_once, connected)
        child.step('connected', connected=len(connected), **warm)
        clock = w2.Clock()
    finally:
        group.terminate(timeout=10)
    child.result(n=len(hosts), ok=ok, errors=errors, cold_s=cold_s, controller_cpu_cold_s=cold_cpu,
                 cold_finish_s=quantiles(finish), connected=len(connected), close_s=clock.wall(),
                 **warm)


if __name__ == '__main__':
    main()
