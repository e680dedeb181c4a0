"""W1 for mitogen: context.call(w1_target.two) over router.local().

The child is /usr/bin/python3 started by mitogen's local (fork+exec) method;
w1_target is shipped to it on demand by mitogen's module forwarder during
the warm-up. Run with the peers venv python.
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
        context = router.local(python_path=REMOTE_PYTHON)
        remote_version = context.call(platform.python_version)
        note('remote w1_target from: %s' % context.call(w1_target.origin))
        samples = measure(lambda: context.call(w1_target.two),
                          args.n, args.warmup)
        context.shutdown(wait=True)
    finally:
        broker.shutdown()
        broker.join()
    emit('mitogen', samples, remote_version, dist_version('mitogen'))


if __name__ == '__main__':
    main()
