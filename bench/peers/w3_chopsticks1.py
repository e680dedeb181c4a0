"""W3 child for the original chopsticks 1.0: every host connected, then each tunnel's put.

1.0's Group.put sends one remote path to every host; on a loopback fleet each host needs
its own, so the group's own operation is built the way Group.put builds it, with
``_put_async(callback, src, dest-for-this-host, 0o644)`` per tunnel, and run by 1.0's loop.
Prints ``{"seconds", "cpu_s", "ok"}``. Run with the peers venv python, cwd bench/peers, PYTHONPATH=bench.
"""
import sys

from harness.w1 import setup_path
from harness.w3 import Push, parse_args
from w1_chopsticks1 import fleet_tunnel_class


def main():
    args = parse_args(__doc__.splitlines()[0])
    setup_path()
    import chopsticks
    if getattr(chopsticks, '__version__', None) != '1.0':
        raise SystemExit('imported the wrong chopsticks')
    import chopsticks.group
    import chopsticks.tunnel
    group = chopsticks.group.Group([fleet_tunnel_class(chopsticks.tunnel, args.ssh_config)(h) for h in args.hosts])
    group.connect()
    push = Push()
    group._new_op()
    for tunnel in group.tunnels:
        tunnel._put_async(group.op.make_callback(tunnel.host), args.src, args.dest.replace('{host}', tunnel.host),
                          0o644)
    result = chopsticks.tunnel.loop.run()
    push.stop()
    ok = sum(1 for r in result.values() if not isinstance(r, chopsticks.tunnel.ErrorResult))
    group.close()
    push.report(ok)
    return 0 if ok == len(args.hosts) else 1


if __name__ == '__main__':
    sys.exit(main())
