"""Connects an SSHTunnel to a port and reports what happened as one JSON line. Run by tests.

Usage: ssh_flood_client.py PORT CONNECT_TIMEOUT. A greenlet ticks every 50 ms meanwhile:
``ticks`` says whether the hub stayed free. Prints ``connecting`` first; on Ctrl-C prints
``{"interrupted": ...}``.
"""

import json
import sys
import time

import gevent

from chopsticks.tunnel import SSHTunnel


def main():
    port, timeout = int(sys.argv[1]), float(sys.argv[2])
    ticks = [0]

    def tick():
        while True:
            gevent.sleep(0.05)
            ticks[0] += 1

    ticker = gevent.spawn(tick)
    tunnel = SSHTunnel("127.0.0.1", port=port, ssh_config="", agent=False, key=(), known_hosts=(),
                       host_key_policy="off", connect_timeout=timeout)
    print("connecting", flush=True)
    started = time.monotonic()
    report = {}
    try:
        tunnel.connect()
    except KeyboardInterrupt:
        report["interrupted"] = True
    except Exception as exc:
        report.update(error=type(exc).__name__, message=str(exc), timeout=isinstance(exc, TimeoutError))
    report.update(elapsed=time.monotonic() - started, ticks=ticks[0])
    ticker.kill()
    print(json.dumps(report), flush=True)


main()
