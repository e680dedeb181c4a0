"""W2 child for mitogen: router.ssh() to every fleet host at once, then os.getpid.

cold: one thread per host (mitogen's connect call blocks), all started at once,
each doing ``ctx = router.ssh(hostname=h, python_path='python3',
ssh_args=['-F', <fleet ssh_config>], connect_timeout=--timeout)`` then
``ctx.call(os.getpid)``; one Broker/Router for the whole fleet. mitogen runs one
OpenSSH client process per host; its defaults are kept (compression on,
keepalives, host keys enforced against the fleet's known_hosts).
warm: ``ctx.call_async(os.getpid)`` on every context, then every result.
close: ``broker.shutdown(); broker.join()``.
Run with the peers venv python; speaks harness.w2's lock-step protocol.
"""
import os

from harness import w2
from harness.w1 import dist_version
from harness.w2threads import run_phases


def main():
    args = w2.parse_args(__doc__.splitlines()[0])
    import mitogen.master
    child = w2.Child('mitogen', dist_version('mitogen'))
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    contexts = {}

    def connect_and_call(host):
        ctx = router.ssh(hostname=host, python_path='python3', ssh_args=['-F', args.ssh_config],
                         connect_timeout=args.timeout)
        contexts[host] = ctx
        return ctx.call(os.getpid)

    def close():
        broker.shutdown()
        broker.join()

    run_phases(child, args, connect_and_call,
               start=lambda host: contexts[host].call_async(os.getpid),
               collect=lambda receiver: receiver.get().unpickle(),
               close=close)


if __name__ == '__main__':
    main()
