"""The command line every W3 child takes, ours and the peers' (see bench/w3_files.py)."""
import argparse


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
