#!/usr/bin/env python3
"""W3 child for this project: ``Group(hosts).connect()``, then time ``group.put(src, dest)``.

``dest`` holds ``{host}`` so that every loopback host writes its own file. Prints one JSON
line: ``{"seconds": push time, "ok": hosts that succeeded}``. Started by bench/w3_files.py.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chopsticks import Group, SSHOptions  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ("--hosts-file", "--port", "--key", "--known-hosts", "--ssh-config", "--src", "--dest"):
        parser.add_argument(flag, required=True)
    args = parser.parse_args()
    with open(args.hosts_file) as f:
        hosts = f.read().split()
    options = SSHOptions(port=int(args.port), key=args.key, known_hosts=args.known_hosts, ssh_config="", agent=False)
    with Group(hosts, options=options) as group:
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
