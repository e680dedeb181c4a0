"""W3 child for parallel-ssh: connect every host, then ``copy_file`` (SFTP) or ``scp_send``.

``ParallelSSHClient(hosts, port, pkey=<fleet key>, pool_size=len(hosts), allow_agent=False,
identity_auth=False)``; connected first with ``run_command('true')``; then the copy, with
``copy_args`` giving each host its own destination. Prints ``{"seconds", "cpu_s", "ok"}``.
Run with the peers venv python.
"""
import sys

import gevent

from harness.w3 import Push, parse_args


def main():
    args = parse_args(__doc__.splitlines()[0])
    from pssh.clients import ParallelSSHClient
    client = ParallelSSHClient(args.hosts, port=int(args.port), pkey=args.key, pool_size=len(args.hosts),
                               allow_agent=False, identity_auth=False, timeout=600, num_retries=1)
    client.join(client.run_command('true'))
    # scp_send formats '%(local_file)s' and '%(remote_file)s' with copy_args; copy_file
    # formats the paths given: each host gets its own destination either way
    copy_args = [{'local_file': args.src, 'remote_file': args.dest.replace('{host}', h), 'host': h}
                 for h in args.hosts]
    push = Push()
    if args.scp:
        jobs = client.scp_send(args.src, args.dest, copy_args=copy_args)
    else:
        jobs = client.copy_file(args.src, args.dest.replace('{host}', '%(host)s'), copy_args=copy_args)
    gevent.joinall(jobs)
    push.stop()
    ok = sum(1 for job in jobs if job.successful())
    for job in jobs:
        if not job.successful():
            print(repr(job.exception), file=sys.stderr)
    push.report(ok)
    return 0 if ok == len(args.hosts) else 1


if __name__ == '__main__':
    sys.exit(main())
