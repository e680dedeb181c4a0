"""W1 for mitogen: context.call(w1_target.two) over router.local() or router.ssh().

local: the child is /usr/bin/python3 started by mitogen's local (fork+exec)
method. ssh (--transport ssh): router.ssh() to a fleet host, i.e. mitogen runs
the OpenSSH client with ``-F <fleet ssh_config>`` (port, user, key, known_hosts
from there; host keys enforced, mitogen's other defaults kept, compression
included) and python_path='python3'. Either way w1_target is shipped to the
child on demand by mitogen's module forwarder during the warm-up. Run with the
peers venv python.
"""
import platform

from _w1common import (REMOTE_PYTHON, dist_version, emit, measure, note,
                       parse_args, setup_path)


def main():
    args = parse_args(__doc__.splitlines()[0])
    setup_path()
    import mitogen.master
    import w1_target

    broker = mitogen.master.Broker()
    try:
        router = mitogen.master.Router(broker)
        if args.transport == 'ssh':
            context = router.ssh(hostname=args.host, python_path='python3',
                                 ssh_args=['-F', args.ssh_config])
        else:
            context = router.local(python_path=REMOTE_PYTHON)
        remote_version = context.call(platform.python_version)
        note('remote w1_target from: %s' % context.call(w1_target.origin))
        samples = measure(lambda: context.call(w1_target.two),
                          args.n, args.warmup)
        context.shutdown(wait=True)
    finally:
        broker.shutdown()
        broker.join()
    emit('mitogen', samples, remote_version, dist_version('mitogen'),
         transport=args.transport)


if __name__ == '__main__':
    main()
