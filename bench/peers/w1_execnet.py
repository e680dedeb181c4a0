"""W1 for execnet over a popen gateway (popen//python=/usr/bin/python3), ssh or a container.

With --transport ssh the gateway is ``ssh=-F <fleet ssh_config> <host>//python=python3``
(execnet runs the OpenSSH client; port, user, key and known_hosts come from the
fleet's ssh_config).

With --transport docker this script starts a container (``ENGINE run -d --rm
--pull=never --name w1-peer-execnet-<pid> IMAGE sleep infinity``) and the gateway
is a popen gateway whose python is a command:
``popen//python=ENGINE exec -i NAME python3`` (execnet splits the python value
with shlex and appends ``-u -c <bootstrap line>``). Both measurements below
use that one gateway; the container is removed at the end, errors included.

Two measurements, one JSON line each:

* execnet-remote_exec: each call is a fresh gw.remote_exec() of a source
  string (w1_target's source plus ``channel.send(two())``) and a
  channel.receive() of its result -- execnet's idiomatic "run this remotely".
* execnet-channel: one long-lived remote_exec loop echoing channel messages;
  each call is ch.send(2) + ch.receive(), i.e. the raw channel round trip.

Run with the peers venv python.
"""
import contextlib
import inspect
import shlex

from harness.w1 import (REMOTE_PYTHON, dist_version, emit, measure,
                       parse_args, setup_path, sleeping_container)

ECHO = '''
for item in channel:
    channel.send(item)
'''


def main():
    args = parse_args(__doc__.splitlines()[0],
                      transports=('local', 'ssh', 'docker'))
    setup_path()
    with contextlib.ExitStack() as stack:
        if args.transport == 'docker':
            engine, name = stack.enter_context(
                sleeping_container(args, 'execnet'))
            spec = 'popen//python=%s exec -i %s python3' % (
                shlex.quote(engine), shlex.quote(name))
        elif args.transport == 'ssh':
            spec = 'ssh=-F %s %s//python=python3' % (args.ssh_config, args.host)
        else:
            spec = 'popen//python=%s' % REMOTE_PYTHON
        run(args, spec)


def run(args, spec):
    import execnet
    import w1_target

    version = dist_version('execnet')
    call_src = inspect.getsource(w1_target) + '\nchannel.send(two())\n'
    extra = {'image': args.image} if args.transport == 'docker' else {}

    gw = execnet.makegateway(spec)
    try:
        remote_version = gw.remote_exec(
            'import platform; channel.send(platform.python_version())'
        ).receive()

        def remote_exec_call():
            return gw.remote_exec(call_src).receive()

        samples_exec = measure(remote_exec_call, args.n, args.warmup)
        emit('execnet-remote_exec', samples_exec, remote_version, version,
             transport=args.transport, **extra)

        ch = gw.remote_exec(ECHO)

        def channel_call():
            ch.send(2)
            return ch.receive()

        samples_chan = measure(channel_call, args.n, args.warmup)
        emit('execnet-channel', samples_chan, remote_version, version,
             transport=args.transport, **extra)
        ch.close()
        ch.waitclose(10)
    finally:
        gw.exit()


if __name__ == '__main__':
    main()
