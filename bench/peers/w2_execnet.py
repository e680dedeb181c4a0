"""W2 child for execnet: an ssh gateway to every fleet host at once, then os.getpid.

cold: one thread per host (makegateway blocks), all started at once, each doing
``gw = group.makegateway('ssh=-F <fleet ssh_config> <host>//python=python3')``
then ``gw.remote_exec('import os; channel.send(os.getpid())').receive()``, on one
``execnet.Group``. execnet runs one OpenSSH client process per host.
warm: a remote_exec of the same source on every gateway, then every receive().
close: ``group.terminate(timeout)``.
Run with the peers venv python; speaks harness.w2's lock-step protocol.
"""
from harness import w2
from harness.w1 import dist_version
from harness.w2threads import run_phases

SOURCE = 'import os; channel.send(os.getpid())'


def main():
    args = w2.parse_args(__doc__.splitlines()[0])
    import execnet
    child = w2.Child('execnet', dist_version('execnet'))
    group = execnet.Group()
    gateways = {}

    def connect_and_call(host):
        gw = group.makegateway('ssh=-F %s %s//python=python3' % (args.ssh_config, host))
        gateways[host] = gw
        return gw.remote_exec(SOURCE).receive(args.timeout)

    run_phases(child, args, connect_and_call,
               start=lambda host: gateways[host].remote_exec(SOURCE),
               collect=lambda channel: channel.receive(args.timeout),
               close=lambda: group.terminate(timeout=10))


if __name__ == '__main__':
    main()
