"""W1 for mitogen: context.call(w1_target.two) over router.local(), router.ssh() or router.podman().

local: the child is /usr/bin/python3 started by mitogen's local (fork+exec)
method. ssh (--transport ssh): router.ssh() to a fleet host, i.e. mitogen runs
the OpenSSH client with ``-F <fleet ssh_config>`` (port, user, key, known_hosts
from there; host keys enforced, mitogen's other defaults kept, compression
included) and python_path='python3'. docker (--transport docker): mitogen's
container methods exec into an existing container, so this script first starts
one (``ENGINE run -d --rm --pull=never --name w1-peer-mitogen-<pid> IMAGE sleep
infinity``), then connects with router.podman(container=NAME,
podman_path=ENGINE, python_path='python3'), i.e. ``podman exec --interactive --
NAME python3 ...`` (router.docker(..., docker_path=ENGINE) if the engine is not
podman), and removes the container at the end (``rm -f --time 0``), errors
included. Every way, w1_target is shipped to the child on demand by mitogen's
module forwarder during the warm-up. Run with the peers venv python.
"""
import contextlib
import os
import platform

from harness.w1 import (REMOTE_PYTHON, dist_version, emit, measure, note,
                       parse_args, setup_path, sleeping_container)


def main():
    args = parse_args(__doc__.splitlines()[0],
                      transports=('local', 'ssh', 'docker'))
    setup_path()
    import mitogen.master
    import w1_target

    extra = {'image': args.image} if args.transport == 'docker' else {}
    with contextlib.ExitStack() as stack:
        if args.transport == 'docker':
            engine, name = stack.enter_context(
                sleeping_container(args, 'mitogen'))
        broker = mitogen.master.Broker()
        try:
            router = mitogen.master.Router(broker)
            if args.transport == 'ssh':
                context = router.ssh(hostname=args.host, python_path='python3',
                                     ssh_args=['-F', args.ssh_config])
            elif args.transport == 'docker':
                if 'podman' in os.path.basename(engine):
                    context = router.podman(container=name, podman_path=engine,
                                            python_path='python3')
                else:
                    context = router.docker(container=name, docker_path=engine,
                                            python_path='python3')
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
         transport=args.transport, **extra)


if __name__ == '__main__':
    main()
