"""W1 for parallel-ssh (SSH only): SSHClient.run_command('true') round trip.

parallel-ssh runs commands, not Python calls, so one "call" here is one
``run_command('true')`` on a connected ``pssh.clients.SSHClient`` (native,
libssh2) plus ``wait_finished`` and reading its (empty) stdout: a new channel,
an exec, and the exit status. The client is used as it comes: parallel-ssh
does not set TCP_NODELAY (so each exchange pays Nagle + delayed ACK, ~40 ms)
and does not check host keys. Login: the fleet's key, no agent.

A call takes ~40 ms, so --n is capped at --max-n (default 300) and the
warm-up at 20; the JSON line gives the n actually measured.
Run with the peers venv python: --transport ssh --host H --port P --key K ...
"""

from harness.w1 import dist_version, emit, measure, note, parse_args

MAX_N = 300
MAX_WARMUP = 20


def main():
    args = parse_args(__doc__.splitlines()[0], transports=('ssh',))
    from pssh.clients import SSHClient

    client = SSHClient(args.host, port=args.port, pkey=args.key,
                       num_retries=1, allow_agent=False, identity_auth=False)

    def call():
        out = client.run_command('true')
        client.wait_finished(out)
        for _ in out.stdout:
            pass
        return 2 if out.exit_code == 0 else ('exit %r' % out.exit_code)

    out = client.run_command('python3 -c "import platform; '
                             'print(platform.python_version())"')
    client.wait_finished(out)
    remote_version = ''.join(out.stdout).strip()
    n = min(args.n, MAX_N)
    note('measuring %d calls (asked %d)' % (n, args.n))
    samples = measure(call, n, min(args.warmup, MAX_WARMUP))
    client.disconnect()
    emit('parallel-ssh', samples, remote_version, dist_version('parallel-ssh'),
         transport='ssh', what="run_command('true')")


if __name__ == '__main__':
    main()
