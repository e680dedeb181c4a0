"""Thread-per-host fan-out, and the phases around it, for the W2 peers whose connect call
blocks (mitogen, execnet)."""
import threading
import time

from . import w2


def fan_out(hosts, work, t0):
    """Run ``work(host)`` in one thread per host, all started at once.

    Returns (host -> result or exception, sorted finish times in s from t0)."""
    results = {}
    finish = []
    lock = threading.Lock()

    def one(host):
        try:
            r = work(host)
        except BaseException as exc:  # noqa: B902 - every failure is reported
            r = exc
        with lock:
            results[host] = r
            finish.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=one, args=(h,), daemon=True) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    finish.sort()
    return results, finish


def run_phases(child, args, connect_and_call, start, collect, close):
    """The cold / warm / close phases of a thread-per-host W2 child, reported to ``child``.

    cold: ``connect_and_call(host)`` (-> os.getpid's value) on every host at once. warm:
    ``start(host)`` on every connected host, then ``collect(handle)`` of each. close:
    ``close()``, timed."""
    hosts = args.hosts
    try:
        child.step('ready')
        clock = w2.Clock()
        results, finish = fan_out(hosts, connect_and_call, clock.t0)
        cold_s, cold_cpu = clock.wall(), clock.cpu()
        ok, errors = w2.check(hosts, results)
        child.step('cold_done', cold_s=cold_s, ok=ok, errors=errors, controller_cpu_cold_s=cold_cpu,
                   cold_finish_s=w2.quantiles(finish))
        connected = [h for h in hosts if isinstance(results.get(h), int)]

        def warm_once():
            handles = [(h, start(h)) for h in connected]
            out = {}
            for h, handle in handles:
                try:
                    out[h] = collect(handle)
                except Exception as exc:
                    out[h] = exc
            return out

        warm = w2.warm_rounds(child, args.warm_rounds, warm_once, connected)
        child.step('connected', connected=len(connected), **warm)
        clock = w2.Clock()
    finally:
        close()
    child.result(n=len(hosts), ok=ok, errors=errors, cold_s=cold_s, controller_cpu_cold_s=cold_cpu,
                 cold_finish_s=w2.quantiles(finish), connected=len(connected), close_s=clock.wall(), **warm)
