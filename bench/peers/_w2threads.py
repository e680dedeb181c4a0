"""Thread-per-host fan-out for the W2 peers whose connect call blocks (mitogen, execnet)."""
import threading
import time


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


def quantiles(finish):
    out = {}
    if finish:
        for q in (0.1, 0.5, 0.9, 1.0):
            out['p%d' % int(q * 100)] = round(finish[min(len(finish) - 1, int(q * len(finish)))], 3)
    return out
