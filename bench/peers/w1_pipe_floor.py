"""W1 floor: os.pipe ping-pong between this process and a /usr/bin/python3 child.

Each measured call writes 8 bytes down one pipe; the child reads them and
writes them back up a second pipe; the call ends when the parent has read
them. No framing, no serialisation: the cost of two pipe hops plus two
process wake-ups, which no remote-call library can beat. Runs under any
Python 3.
"""
import os
import subprocess
import sys

from harness.w1 import REMOTE_PYTHON, emit, measure, parse_args

CHILD = r'''
import os, sys
r, w = int(sys.argv[1]), int(sys.argv[2])
os.write(w, ('%d.%d.%d\n' % sys.version_info[:3]).encode())
while True:
    b = os.read(r, 64)
    if not b:
        break
    os.write(w, b)
'''

MSG = b'ping1234'


def main():
    args = parse_args(__doc__.splitlines()[0])
    down_r, down_w = os.pipe()  # parent -> child
    up_r, up_w = os.pipe()      # child -> parent
    child = subprocess.Popen(
        [REMOTE_PYTHON, '-S', '-c', CHILD, str(down_r), str(up_w)],
        pass_fds=(down_r, up_w), close_fds=True)
    os.close(down_r)
    os.close(up_w)
    try:
        banner = b''
        while not banner.endswith(b'\n'):
            chunk = os.read(up_r, 64)
            if not chunk:
                raise RuntimeError('child exited before its banner')
            banner += chunk
        remote_version = banner.decode().strip()
        n_msg = len(MSG)

        def call():
            os.write(down_w, MSG)
            got = os.read(up_r, n_msg)
            while len(got) < n_msg:  # never taken in practice (pipe writes < PIPE_BUF are atomic)
                got += os.read(up_r, n_msg - len(got))
            return 2 if got == MSG else got

        samples = measure(call, args.n, args.warmup)
    finally:
        os.close(down_w)
        child.wait(timeout=10)
        os.close(up_r)
    emit('pipe-floor', samples, remote_version,
         'python %d.%d.%d' % sys.version_info[:3])


if __name__ == '__main__':
    main()
