#!/usr/bin/env python3
"""W3 child for this project: ``Group(hosts).connect()``, then time ``group.put(src, dest)``.

``dest`` holds ``{host}`` so that every loopback host writes its own file. Prints one JSON
line: ``{"seconds": push time, "ok": hosts that succeeded}``. Started by bench/w3_files.py;
``--workers N`` spreads the hosts over N shard processes.
"""

import json
import sys
import time

import chopsticks
from chopsticks import Group, SSHOptions
from harness import runner
from harness.w3 import parse_args


def main() -> int:
    runner.check_checkout(chopsticks)
    args = parse_args(__doc__.splitlines()[0])
    hosts = args.hosts
    options = SSHOptions(port=int(args.port), key=args.key, known_hosts=args.known_hosts, ssh_config="", agent=False)
    with Group(hosts, options=options, workers=args.workers) as group:
        group.connect().raise_failures()
        started = time.monotonic()
        result = group.put(args.src, args.dest)
        seconds = time.monotonic() - started
    for host, error in result.failures():
        print("%s: %s" % (host, error.msg), file=sys.stderr)
    print(json.dumps({"seconds": round(seconds, 3), "ok": sum(1 for _ in result.successful())}))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
