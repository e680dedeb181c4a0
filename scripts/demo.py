"""Demo: a real SSH fan-out over a loopback fleet that this script starts and stops itself.

It starts one OpenSSH sshd serving 127.0.0.2, 127.0.0.3 ... (keys generated for this run,
nothing in ~/.ssh touched), then runs ``python -m chopsticks.fanout facts`` over every host
exactly as a user would, then a shell command on each, then stops the fleet. The hosts have
nothing of chopsticks installed: each agent arrives over the SSH channel.
"""

import argparse
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from fleet import Fleet  # noqa: E402


def fanout(fleet, *words) -> int:
    """Run the fan-out command over the fleet as a user would type it, showing the command."""
    shown = ["python", "-m", "chopsticks.fanout", "-F", fleet.ssh_config, "--format", "table", *words]
    print("\n$ " + " ".join(shlex.quote(word) for word in shown), flush=True)
    return subprocess.call([sys.executable] + shown[1:], cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20, help="number of SSH hosts (default 20)")
    args = parser.parse_args()
    if not 1 <= args.hosts <= 60000:
        parser.error("--hosts must be from 1 to 60000")
    with Fleet(args.hosts) as fleet:  # started here, stopped (and its directory removed) on the way out
        hosts_file = fleet.path("hosts.txt")
        with open(hosts_file, "w") as f:
            f.write("\n".join(fleet.hosts) + "\n")
        print("sshd (pid %d) on port %d serves %d hosts, %s to %s; ssh config and keys in %s"
              % (fleet.proc.pid if fleet.proc else 0, fleet.port, len(fleet.hosts), fleet.hosts[0],
                 fleet.hosts[-1], fleet.dir))
        status = fanout(fleet, "-f", hosts_file, "facts", "hostname", "ip", "os_release", "kernel", "cpus",
                        "memory", "load", "python_version")
        first = "%s,%s" % (fleet.hosts[0], fleet.hosts[min(2, len(fleet.hosts) - 1)])
        status = max(status, fanout(fleet, "-H", first, "run", "echo agent $PPID as $(id -un) on $(nproc) cpus"))
    print("\nfleet stopped; exit status %d" % status)
    return status


if __name__ == "__main__":
    sys.exit(main())
