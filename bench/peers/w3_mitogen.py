"""W3 child for mitogen: router.ssh() per host (compression off), then each host pulls the
file through mitogen's own FileService (``mitogen.service.FileService.get``, the streamed,
windowed transfer ansible_mitogen uses), into ``DEST.part``, renamed, its SHA-256 answered.

Contexts connect before the clock (one thread per host: mitogen's connect blocks); the push
is timed until every host has answered. Prints ``{"seconds", "cpu_s", "ok"}``. Run with the peers
venv python.
"""
import hashlib
import sys
import threading

from harness.w3 import Push, parse_args


def receive(context, path, dest):
    """On the host: pull ``path`` from ``context``'s FileService into ``dest``; its SHA-256."""
    import hashlib
    import os
    import mitogen.service

    class Hashing(object):
        def __init__(self, f):
            self.f, self.digest = f, hashlib.sha256()

        def write(self, data):
            self.digest.update(data)
            return self.f.write(data)

    with open(dest + '.part', 'wb') as f:
        out = Hashing(f)
        ok, _ = mitogen.service.FileService.get(context, path, out)
    if not ok:
        raise IOError('mitogen FileService.get failed for %s' % path)
    os.rename(dest + '.part', dest)
    return out.digest.hexdigest()


def main():
    args = parse_args(__doc__.splitlines()[0])
    import mitogen.master
    import mitogen.service
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    contexts = [None] * len(args.hosts)

    def connect(i, host):
        contexts[i] = router.ssh(hostname=host, python_path='python3', ssh_args=['-F', args.ssh_config],
                                 compression=False, connect_timeout=300)

    threads = [threading.Thread(target=connect, args=(i, h)) for i, h in enumerate(args.hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pool = mitogen.service.get_or_create_pool(router=router)
    pool.get_service('mitogen.service.FileService').register(args.src)
    with open(args.src, 'rb') as f:
        want = hashlib.sha256(f.read()).hexdigest()
    push = Push()
    calls = [ctx.call_async(receive, router.myself(), args.src, args.dest.replace('{host}', host))
             for ctx, host in zip(contexts, args.hosts)]
    answers = [call.get().unpickle() for call in calls]
    push.stop()
    broker.shutdown()
    broker.join()
    ok = sum(1 for a in answers if a == want)
    push.report(ok)
    return 0 if ok == len(args.hosts) else 1


if __name__ == '__main__':
    sys.exit(main())
