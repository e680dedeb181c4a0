"""W3 child for parallel-ssh: connect every host, then ``copy_file`` (SFTP) or ``scp_send``.

``ParallelSSHClient(hosts, port, pkey=<fleet key>, pool_size=len(hosts), allow_agent=False,
identity_auth=False)``; connected first with ``run_command('true')``; then the copy, with
``copy_args`` giving each host its own destination. Prints ``{"seconds", "ok"}``.
Run with the peers venv python.
"""
import json
import sys
import time

import gevent

from w3_args import parse_args


def main():
    args = parse_args(__doc__.splitlines()[0])
    from pssh.clients import ParallelSSHClient
    client = ParallelSSHClient(args.hosts, port=int(args.port), pkey=args.key, pool_size=len(args.hosts),
                               allow_agent=False, identity_auth=False, timeout=600, num_retries=1)
    client.join(client.run_command('true'))
    dest = args.dest.replace('{host}', '%(host)s')
    copy_args = [{'host': h} for h in args.hosts]
    started = time.monotonic()
    copy = client.scp_send if args.scp else client.copy_file
    jobs = copy(args.src, dest, copy_args=copy_args)
    gevent.joinall(jobs)
    seconds = time.monotonic() - started
    ok = sum(1 for job in jobs if job.successful())
    for job in jobs:
        if not job.successful():
            print(repr(job.exception), file=sys.stderr)
    print(json.dumps({'seconds': round(seconds, 3), 'ok': ok}))
    return 0 if ok == len(args.hosts) else 1


if __name__ == '__main__':
    sys.exit(main())
