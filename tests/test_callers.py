"""Calls made from places a tunnel cannot serve fail at once with a clear error, calls from
other threads and under asyncio are served by the hub thread, and a monkey-patched controller
still sends the standard library's functions by their names.

Each scenario runs in its own Python process under a timeout, so a regression that hangs
fails the test instead of stalling the suite.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Generous: each scenario starts one or two local agents (well under a second unloaded).
SCENARIO_TIMEOUT = 60


def run_scenario(*parts: str) -> dict:
    """Run the code ``parts`` (which set ``result``, a JSON-able dict) in a fresh interpreter."""
    code = "\n".join(textwrap.dedent(part) for part in parts) + "\nimport json, sys\nprint(json.dumps(result))\nsys.stdout.flush()\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=SCENARIO_TIMEOUT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


CATCH = '''
def outcome(fn):
    try:
        return {"value": fn()}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc), "runtime": isinstance(exc, RuntimeError)}
'''


def test_a_thread_that_the_hub_does_not_run_in_is_refused_at_once():
    """A tunnel connected in the main thread, called (and closed) from another OS thread:
    WrongThread at once, naming both threads; the tunnel still works from its own thread."""
    result = run_scenario(CATCH, '''
        import os, threading, time
        from chopsticks.tunnel import Local
        tun = Local("owned")
        main_pid = tun.call(os.getpid)
        seen = {}
        def worker():
            started = time.monotonic()
            seen["call"] = outcome(lambda: tun.call(os.getpid))
            seen["close"] = outcome(tun.close)
            seen["elapsed"] = time.monotonic() - started
        thread = threading.Thread(target=worker, name="worker-1")
        thread.start()
        thread.join(30)
        result = dict(seen, alive=thread.is_alive(), again=tun.call(os.getpid) == main_pid)
        tun.close()
    ''')
    assert result["alive"] is False and result["again"] is True
    for what in ("call", "close"):
        assert result[what]["error"] == "WrongThread" and result[what]["runtime"], result
        assert "thread 'MainThread' and cannot be used from thread 'worker-1'" in result[what]["message"]
    assert result["elapsed"] < 5  # at once, not after some timeout


def test_asyncio_to_thread_is_refused_at_once():
    """``await asyncio.to_thread(tun.call, ...)`` on a tunnel the main thread runs: WrongThread
    (gevent would otherwise raise LoopExit from deep inside, or wait forever)."""
    result = run_scenario(CATCH, '''
        import asyncio, os
        from chopsticks.tunnel import Local
        tun = Local("owned")
        tun.connect()
        async def main():
            try:
                await asyncio.to_thread(tun.call, os.getpid)
            except Exception as exc:
                return {"error": type(exc).__name__, "message": str(exc)}
        result = asyncio.run(asyncio.wait_for(main(), 30))
        tun.close()
    ''')
    assert result["error"] == "WrongThread", result
    assert "runs in the gevent hub of thread 'MainThread'" in result["message"]


def test_a_pipe_tunnel_started_from_another_thread_runs_in_the_hub_thread():
    """A Local tunnel first used from a thread other than the main one is started by the hub
    thread (gevent watches child processes only in the main thread's loop: this one starts and
    reaps its own), serves that thread, and once closed leaves no process behind."""
    result = run_scenario(CATCH, '''
        import os, threading
        from chopsticks.tunnel import Local
        seen = {}
        def worker():
            tunnel = Local("elsewhere")
            seen.update(outcome(lambda: tunnel.call(os.getppid)))
            seen["owner"] = tunnel.thread.name
            tunnel.close()
        thread = threading.Thread(target=worker, name="worker-2")
        thread.start()
        thread.join(30)
        children = [pid for task in os.listdir("/proc/self/task")  # every thread's children
                    for pid in open("/proc/self/task/%s/children" % task).read().split()]
        result = dict(seen, alive=thread.is_alive(), children=children, me=os.getpid())
    ''')
    assert result["alive"] is False and result["children"] == []
    assert result["value"] == result["me"] and result["owner"] == "chopsticks-hub", result


def test_a_blocking_call_inside_asyncio_works():
    """Inside a running asyncio loop (a script's ``asyncio.run``, a Jupyter kernel, which
    always runs one) a plain call works and returns: the tunnel runs in the hub thread, and
    the call blocks the loop while it runs, as any blocking call does, and never hangs."""
    result = run_scenario('''
        import asyncio, os
        from chopsticks.tunnel import Local
        tun = Local("in-loop")
        async def main():
            first = tun.call(os.getpid)
            await asyncio.sleep(0)
            return [first, tun.call(os.getpid)]
        pids = asyncio.run(asyncio.wait_for(main(), 30))
        owner = tun.thread.name
        tun.close()
        result = {"same": pids[0] == pids[1], "remote": pids[0] != os.getpid(), "owner": owner}
    ''')
    assert result == {"same": True, "remote": True, "owner": "chopsticks-hub"}


def test_a_monkey_patched_controller_sends_stdlib_functions_by_their_names():
    """After ``gevent.monkey.patch_all()``, ``time.sleep`` (gevent's sleep here) runs on the
    remote as its own ``time.sleep``, alone or inside a partial; so do other patched names."""
    result = run_scenario(CATCH, '''
        from gevent import monkey
        monkey.patch_all()
        import functools, os, socket, time
        from chopsticks.tunnel import Local
        assert time.sleep.__module__.startswith("gevent")
        with Local("patched") as tun:
            result = {
                "sleep": outcome(lambda: tun.call(time.sleep, 0)),
                "partial": outcome(lambda: tun.call(functools.partial(time.sleep, 0))),
                "getaddrinfo": outcome(lambda: tun.call(socket.getaddrinfo, "127.0.0.1", 1)[0][4][0]),
                "in_args": outcome(lambda: tun.call(callable, time.sleep)),
            }
    ''')
    assert result == {"sleep": {"value": None}, "partial": {"value": None},
                      "getaddrinfo": {"value": "127.0.0.1"}, "in_args": {"value": True}}, result
