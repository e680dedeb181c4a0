"""W1 for the original chopsticks 1.0 (PyPI, 2017): tun.call(w1_target.two)
over a chopsticks.tunnel.Local tunnel (remote = /usr/bin/python3), or with
--transport ssh over its SSHTunnel (``Tunnel(host)``), which runs the OpenSSH
client as ``ssh -o PasswordAuthentication=no <host> /usr/bin/python3 ...``.
To reach the fleet, the subclass FleetTunnel below only adds
``-F <fleet ssh_config>`` after ``ssh`` (port, user, key, known_hosts); no
wrapper process. The remote interpreter stays 1.0's class default
/usr/bin/python3, which is the fleet's python3.

With --transport docker it is 1.0's own ``Docker(name, image=IMAGE)`` tunnel,
unmodified: it runs the literal command ``docker run -i --name NAME --rm IMAGE
python3 -usS -c ...`` (no ``--pull=never``: the image is checked to be local
first, and a local ``chopsticks/python:3.11`` resolves to ``localhost/...``
without a pull). ``docker`` there is whatever PATH finds, so this script puts a
temporary directory holding a ``docker`` symlink to the --engine executable
(default podman) first on PATH while the tunnel runs. NAME is
``w1-peer-chopsticks-1.0-<pid>`` (or --name); 1.0 removes the container when
the tunnel closes (``--rm``), and this script removes it again (``rm -f``)
in case it did not, errors included.

w1_target is shipped to the remote on demand by chopsticks' import hook
(OP_IMP) during the warm-up. Run with the peers venv python and
PYTHONPATH=bench, so that our own ``chopsticks`` package (repo root) is not
importable (w1_peers.py does); the script refuses to run if it would import
the wrong one.

Python 3.11 compatibility (checked on 3.11.7 local / 3.11.2 remote): 1.0
works here unmodified, so nothing is monkeypatched. What it leans on, for
whoever moves the remote to a newer Python:
  * the remote bootstrap (chopsticks/bubble.py) does ``import imp`` and
    ``from imp import is_builtin``; ``imp`` was removed in 3.12, so a 3.12+
    remote dies on start.
  * its remote import hook is a sys.path_hooks finder with only the legacy
    find_module()/load_module() API; 3.11's PathFinder still falls back to
    find_module() (with a silenced ImportWarning), 3.12 does not.
  * locally, Thread.setDaemon() is deprecated (warning only) and
    serialise_main.trace_globals() misreads 3.11 LOAD_GLOBAL opargs (only
    used for functions defined in __main__, which this benchmark avoids by
    calling a function from the importable module w1_target).
The chopsticks/python:3.13 image is such a remote, so --transport docker
--image chopsticks/python:3.13 fails (an error line from w1_peers.py).
A 3.12+ remote would need a patched bubble (e.g. replace ``imp.new_module``
with ``types.ModuleType`` and ``imp.is_builtin`` with a check against
``sys.builtin_module_names``, and give Loader find_spec()) sent in place of
``chopsticks.tunnel.bubble`` -- not done because it is not needed here.
"""
import contextlib
import os
import platform
import shutil
import tempfile

from harness.w1 import (REMOTE_PYTHON, check_image, container_name,
                       dist_version, emit, engine_path, measure, note,
                       parse_args, remove_container, setup_path)


def fleet_tunnel_class(tunnel_module, ssh_config):
    """chopsticks 1.0's SSHTunnel with ``-F ssh_config`` after ``ssh``."""
    class FleetTunnel(tunnel_module.SSHTunnel):
        def cmd_args(self):
            argv = super(FleetTunnel, self).cmd_args()
            return argv[:1] + ['-F', ssh_config] + argv[1:]
    return FleetTunnel


@contextlib.contextmanager
def docker_on_path(engine):
    """A temporary directory with ``docker`` -> ``engine`` first on PATH."""
    shim = tempfile.mkdtemp(prefix='w1-docker-shim-')
    old_path = os.environ.get('PATH', '')
    try:
        os.symlink(engine, os.path.join(shim, 'docker'))
        os.environ['PATH'] = shim + os.pathsep + old_path
        yield
    finally:
        os.environ['PATH'] = old_path
        shutil.rmtree(shim, ignore_errors=True)


def main():
    args = parse_args(__doc__.splitlines()[0],
                      transports=('local', 'ssh', 'docker'))
    setup_path()
    import chopsticks
    if getattr(chopsticks, '__version__', None) != '1.0':
        raise SystemExit(
            'imported the wrong chopsticks (%s from %s); run with the peers '
            'venv python and PYTHONPATH=bench' % (
                getattr(chopsticks, '__version__', '?'),
                os.path.dirname(chopsticks.__file__)))
    import chopsticks.tunnel
    import w1_target

    extra = {}
    with contextlib.ExitStack() as stack:
        if args.transport == 'docker':
            engine = engine_path(args.engine)
            check_image(engine, args.image)
            name = container_name(args, 'chopsticks-1.0')
            stack.callback(remove_container, engine, name)
            stack.enter_context(docker_on_path(engine))
            tun = chopsticks.tunnel.Docker(name, image=args.image)
            extra['image'] = args.image
        elif args.transport == 'ssh':
            tun = fleet_tunnel_class(chopsticks.tunnel, args.ssh_config)(args.host)
        else:
            tunnel_cls = chopsticks.tunnel.Local
            tunnel_cls.python3 = REMOTE_PYTHON  # already the default; made explicit
            tun = tunnel_cls()
        try:
            remote_version = tun.call(platform.python_version)
            note('remote w1_target from: %s' % tun.call(w1_target.origin))
            samples = measure(lambda: tun.call(w1_target.two),
                              args.n, args.warmup)
        finally:
            tun.close()
    emit('chopsticks-1.0', samples, remote_version,
         chopsticks.__version__ or dist_version('chopsticks'),
         transport=args.transport, **extra)


if __name__ == '__main__':
    main()
