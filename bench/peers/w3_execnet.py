"""W3 child for execnet: a gateway per host over OpenSSH, a receiver run with remote_exec,
the file sent over each channel in 1 MiB chunks (read once, sent to every channel in turn).

The receiver writes ``DEST.part``, hashes as it goes, renames, and answers its SHA-256.
Gateways and receivers start before the clock; the push is timed until every host has
answered. Prints ``{"seconds", "cpu_s", "ok"}``. Run with the peers venv python.
"""
import hashlib
import sys
import threading

from harness.w3 import Push, parse_args

RECEIVER = '''
import hashlib, os
path = channel.receive()
digest = hashlib.sha256()
with open(path + ".part", "wb") as f:
    while True:
        chunk = channel.receive()
        if chunk is None:
            break
        f.write(chunk)
        digest.update(chunk)
os.rename(path + ".part", path)
channel.send(digest.hexdigest())
'''


def main():
    args = parse_args(__doc__.splitlines()[0])
    import execnet
    group = execnet.Group()
    gateways = [None] * len(args.hosts)

    def connect(i, host):
        gateways[i] = group.makegateway('ssh=-F %s %s//python=python3' % (args.ssh_config, host))

    threads = [threading.Thread(target=connect, args=(i, h)) for i, h in enumerate(args.hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channels = [gw.remote_exec(RECEIVER) for gw in gateways]
    want = hashlib.sha256()
    push = Push()
    for channel, host in zip(channels, args.hosts):
        channel.send(args.dest.replace('{host}', host))
    with open(args.src, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            want.update(chunk)
            for channel in channels:
                channel.send(chunk)
    for channel in channels:
        channel.send(None)
    answers = [channel.receive() for channel in channels]
    push.stop()
    group.terminate(timeout=10)
    ok = sum(1 for a in answers if a == want.hexdigest())
    push.report(ok)
    return 0 if ok == len(args.hosts) else 1


if __name__ == '__main__':
    sys.exit(main())
