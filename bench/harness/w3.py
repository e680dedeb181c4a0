"""What every W3 child shares, ours and the peers' (see bench/w3_files.py): its command line,
and the timing of its push (wall, and the controller's CPU: the child and its live
descendants, such as OpenSSH clients or shard processes; and, when ``W3_FLEET_PID`` names the
fleet's sshd, the hosts' side: that sshd and everything under it, agents and the sessions
that came and went), and the bytes the child itself sent on its TCP sockets (its children's,
such as OpenSSH clients', are not counted)."""
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
    ap.add_argument('--sessions', default='auto', help='ours: put\'s sessions (default auto: put\'s own choice)')
    ap.add_argument('--relay', type=int, default=None, help='ours: push through relays, a tree of this degree')
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
        self.fleet = int(os.environ.get('W3_FLEET_PID') or 0)
        self.host0 = procfs.subtree_cpu_s(self.fleet) if self.fleet else None
        self.sent0 = procfs.tcp_bytes_sent(os.getpid())
        self.started, self.cpu0 = time.monotonic(), tree_cpu_s()
        self.seconds = self.cpu_s = self.host_cpu_s = self.sent = None

    def stop(self):
        self.seconds, self.cpu_s = time.monotonic() - self.started, tree_cpu_s() - self.cpu0
        self.sent = procfs.tcp_bytes_sent(os.getpid()) - self.sent0
        if self.fleet:
            time.sleep(0.3)  # sessions that closed with the push: reaped by the listener by now
            self.host_cpu_s = procfs.subtree_cpu_s(self.fleet) - self.host0

    def report(self, ok):
        record = {'seconds': round(self.seconds, 3), 'cpu_s': round(self.cpu_s, 3), 'ok': ok,
                  'sent_bytes': self.sent}
        if self.host_cpu_s is not None:
            record['host_cpu_s'] = round(self.host_cpu_s, 3)
        print(json.dumps(record), flush=True)
