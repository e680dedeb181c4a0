"""W2 child for parallel-ssh: a fresh ``python3 -c`` on every host, no agent.

parallel-ssh runs commands, not Python functions, so "call os.getpid on every
host" is ``run_command("python3 -c 'import os; print(os.getpid())'")`` on a
``pssh.clients.ParallelSSHClient(hosts, port, pkey=<fleet key>,
pool_size=len(hosts), allow_agent=False, identity_auth=False,
timeout=--timeout)`` (pool_size = N: every host at once, like the others;
parallel-ssh's default is 100), then ``join`` and parsing each host's stdout.
cold: the first run_command (connects and authenticates every host).
warm: run_command again on the connected client: a new channel and a new
python3 process per host each time. close: every host client's disconnect().
parallel-ssh does not check host keys and does not set TCP_NODELAY.
Run with the peers venv python; speaks harness.w2's lock-step protocol.
"""
from harness import w2
from harness.w1 import dist_version

COMMAND = "python3 -c 'import os; print(os.getpid())'"


def main():
    args = w2.parse_args(__doc__.splitlines()[0])
    from pssh.clients import ParallelSSHClient
    child = w2.Child('parallel-ssh', dist_version('parallel-ssh'))
    hosts = args.hosts
    client = None

    def run_once():
        output = client.run_command(COMMAND, stop_on_errors=False)
        client.join(output)
        out = {}
        for ho in output:
            if ho.exception is not None:
                out[ho.host] = ho.exception
                continue
            try:
                text = ''.join(ho.stdout).strip()
                out[ho.host] = int(text)
            except Exception as exc:
                out[ho.host] = exc
        return out

    child.step('ready')
    clock = w2.Clock()
    client = ParallelSSHClient(hosts, port=args.port, pkey=args.key, pool_size=len(hosts),
                               allow_agent=False, identity_auth=False, timeout=args.timeout,
                               num_retries=1)
    results = run_once()
    cold_s, cold_cpu = clock.wall(), clock.cpu()
    ok, errors = w2.check(hosts, results)
    child.step('cold_done', cold_s=cold_s, ok=ok, errors=errors, controller_cpu_cold_s=cold_cpu)
    warm = w2.warm_rounds(child, args.warm_rounds, run_once, hosts)
    child.step('connected', connected=ok, **warm)
    clock = w2.Clock()
    for c in list(getattr(client, '_host_clients', {}).values()):
        try:
            c.disconnect()
        except Exception:
            pass
    child.result(n=len(hosts), ok=ok, errors=errors, cold_s=cold_s, controller_cpu_cold_s=cold_cpu,
                 connected=ok, close_s=clock.wall(), **warm)


if __name__ == '__main__':
    main()
