#!/usr/bin/env python3
"""W3 child for this project: ``Group(hosts).connect()``, then time ``group.put(src, dest)``.

``dest`` holds ``{host}`` so that every loopback host writes its own file. Prints one JSON
line: ``{"seconds": push time, "cpu_s": the controller's CPU in it, "ok": hosts that succeeded}``. Started by bench/w3_files.py;
``--workers N`` spreads the hosts over N shard processes; ``--sessions N`` is put's ``sessions``;
``--relay N`` pushes through relays, a tree of degree N (``Group.put``'s ``relay``), its tunnels
connected before the push.
"""

import os
import sys

import chopsticks
from chopsticks import Group, SSHOptions, relay_put
from harness import runner
from harness.w3 import Push, parse_args


def main() -> int:
    runner.check_checkout(chopsticks)
    args = parse_args(__doc__.splitlines()[0])
    hosts = args.hosts
    options = SSHOptions(port=int(args.port), key=args.key, known_hosts=args.known_hosts, ssh_config="", agent=False)
    with Group(hosts, options=options, workers=args.workers) as group:
        if args.relay:  # the tree's tunnels, connected before the push as the direct ones are
            tunnels, made = relay_put.tree_of(group.tunnels, args.relay)
            group = Group(tunnels)
        group.connect().raise_failures()
        push = Push()
        if args.relay:
            result = group.put(args.src, args.dest, relay=True)
        else:
            result = group.put(args.src, args.dest, sessions=None if args.sessions == "auto" else int(args.sessions))
        push.stop()
        if args.relay:
            for tunnel in group:  # each host's file under its own name, as the orchestrator checks
                if tunnel.via is not None:
                    os.rename(args.dest.replace("{host}", tunnel.host), args.dest.replace("{host}", tunnel.name))
            group.close()
    for host, error in result.failures():
        print("%s: %s" % (host, error.msg), file=sys.stderr)
    push.report(sum(1 for _ in result.successful()))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
