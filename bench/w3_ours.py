#!/usr/bin/env python3
"""W3 child for this project: ``Group(hosts).connect()``, then time ``group.put(src, dest)``.

``dest`` holds ``{host}`` so that every loopback host writes its own file. Prints one JSON
line: ``{"seconds": push time, "cpu_s": the controller's CPU in it, "ok": hosts that succeeded}``. Started by bench/w3_files.py;
``--workers N`` spreads the hosts over N shard processes; ``--sessions N`` is put's ``sessions``.
"""

import sys

import chopsticks
from chopsticks import Group, SSHOptions
from harness import runner
from harness.w3 import Push, parse_args


def main() -> int:
    runner.check_checkout(chopsticks)
    args = parse_args(__doc__.splitlines()[0])
    hosts = args.hosts
    options = SSHOptions(port=int(args.port), key=args.key, known_hosts=args.known_hosts, ssh_config="", agent=False)
    with Group(hosts, options=options, workers=args.workers) as group:
        group.connect().raise_failures()
        push = Push()
        result = group.put(args.src, args.dest, sessions=None if args.sessions == "auto" else int(args.sessions))
        push.stop()
    for host, error in result.failures():
        print("%s: %s" % (host, error.msg), file=sys.stderr)
    push.report(sum(1 for _ in result.successful()))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
