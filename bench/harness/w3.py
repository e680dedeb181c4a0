"""What every W3 child shares, ours and the peers' (see bench/w3_files.py): its command line,
and the timing of its push (wall, and the controller's CPU: the child and its live
descendants, such as OpenSSH clients or shard processes)."""
import argparse
import json
import os
import time

from harness import procfs


def parse_args(description):
    ap = argparse.ArgumentParser(description=description)
    for flag in ('--hosts-file', '--port', '--key', '--known-hosts', '--ssh-config', '--src', '--dest'):
        ap.add_argument(flag, required=True)
    ap.add_argument('--scp', action='store_true', help='parallel-ssh: SCP instead of SFTP')
    ap.add_argument('--workers', type=int, default=1, help='ours: shard processes (default 1: none)')
    args = ap.parse_args()
    with open(args.hosts_file) as f:
        args.hosts = f.read().split()
    return args


def tree_cpu_s():
    """CPU seconds so far of this process and of its live descendants."""
    return time.process_time() + sum(procfs.threads_cpu_s(pid) or 0.0 for pid in procfs.descendants(os.getpid()))


class Push:
    """One push, timed from its making to ``stop``; ``report(ok)`` prints ``{"seconds",
    "cpu_s", "ok"}`` (the child's one line of output)."""

    def __init__(self):
        self.started, self.cpu0 = time.monotonic(), tree_cpu_s()
        self.seconds = self.cpu_s = None

    def stop(self):
        self.seconds, self.cpu_s = time.monotonic() - self.started, tree_cpu_s() - self.cpu0

    def report(self, ok):
        print(json.dumps({'seconds': round(self.seconds, 3), 'cpu_s': round(self.cpu_s, 3), 'ok': ok}), flush=True)
