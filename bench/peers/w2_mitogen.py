"""W2 child for mitogen: router.ssh() to every fleet host at once, then os.getpid.

cold: one thread per host (mitogen's connect call blocks), all started at once,
each doing ``ctx = router.ssh(hostname=h, python_path='python3',
ssh_args=['-F', <fleet ssh_config>], connect_timeout=--timeout)`` then
``ctx.call(os.getpid)``; one Broker/Router for the whole fleet. mitogen runs one
OpenSSH client process per host; its defaults are kept (compression on,
keepalives, host keys enforced against the fleet's known_hosts).
warm: ``ctx.call_async(os.getpid)`` on every context, then every result.
close: ``broker.shutdown(); broker.join()``.
Run with the peers venv python; speaks _w2common's lock-step protocol.
"""
import os

import _w2common as w2
from _w1common import dist_version
from _w2threads import fan_out, quantiles


def main():
    args = w2.parse_args(__doc__.splitlines()[0])
    import mitogen.master
    child = w2.Child('mitogen', dist_version('mitogen'))
    hosts = args.hosts
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    contexts = {}

    def connect_and_call(host):
        ctx = router.ssh(hostname=host, python_path='python3', ssh_args=['-F', args.ssh_config],
                         connect_timeout=args.timeout)
        contexts[host] = ctx
        return ctx.call(os.getpid)

    try:
        child.step('ready')
        clock = w2.Clock()
        results, finish = fan_out(hosts, connect_and_call, clock.t0)
        cold_s, cold_cpu = clock.wall(), clock.cpu()
        ok, errors = w2.check(hosts, results)
        child.step('cold_done', cold_s=cold_s, ok=ok, errors=errors, controller_cpu_cold_s=cold_cpu,
                   cold_finish_s=quantiles(finish))
        connected = [h for h in hosts if h in contexts and isinstance(results.get(h), int)]

        def warm_once():
            recvs = [(h, contexts[h].call_async(os.getpid)) for h in connected]
            out = {}
            for h, recv in recvs:
                try:
                    out[h] = recv.get().unpickle()
                except Exception as exc:
                    out[h] = exc
            return out

        warm = w2.warm_rounds(child, args.warm_rounds, warm_once, connected)
        child.step('connected', connected=len(connected), **warm)
        clock = w2.Clock()
    finally:
        broker.shutdown()
        broker.join()
    child.result(n=len(hosts), ok=ok, errors=errors, cold_s=cold_s, controller_cpu_cold_s=cold_cpu,
                 cold_finish_s=quantiles(finish), connected=len(connected), close_s=clock.wall(),
                 **warm)


if __name__ == '__main__':
    main()
