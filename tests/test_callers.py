"""Calls made from places a tunnel cannot serve fail at once with a clear error, and a
monkey-patched controller still sends the standard library's functions by their names.

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


def test_a_pipe_tunnel_started_from_another_thread_is_refused():
    """A Local tunnel first used from a thread other than the main one: WrongThread saying
    pipe tunnels start from the main thread (gevent's own error was a TypeError about child
    watchers), and no process is left behind."""
    result = run_scenario(CATCH, '''
        import os, threading
        from chopsticks.tunnel import Local
        seen = {}
        def worker():
            seen.update(outcome(lambda: Local("elsewhere").call(os.getpid)))
        thread = threading.Thread(target=worker, name="worker-2")
        thread.start()
        thread.join(30)
        children = open("/proc/%d/task/%d/children" % (os.getpid(), os.getpid())).read().split()
        result = dict(seen, alive=thread.is_alive(), children=children)
    ''')
    assert result["alive"] is False and result["children"] == []
    assert result["error"] == "WrongThread", result
    assert "a pipe tunnel starts its process from the main thread's gevent hub" in result["message"]
    assert "not from thread 'worker-2'" in result["message"]


def test_a_blocking_call_inside_asyncio_in_the_hubs_own_thread_works():
    """Inside a running asyncio loop in the thread that runs the hub (a script's
    ``asyncio.run``, a Jupyter kernel, which always runs one) a call works and returns: it
    blocks that loop while it runs, as any blocking call does, and never hangs."""
    result = run_scenario('''
        import asyncio, os
        from chopsticks.tunnel import Local
        tun = Local("in-loop")
        async def main():
            first = tun.call(os.getpid)
            await asyncio.sleep(0)
            return [first, tun.call(os.getpid)]
        pids = asyncio.run(asyncio.wait_for(main(), 30))
        tun.close()
        result = {"same": pids[0] == pids[1], "remote": pids[0] != os.getpid()}
    ''')
    assert result == {"same": True, "remote": True}


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
