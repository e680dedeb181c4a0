"""The library from OS threads: plain threads use tunnels and groups through the hub thread
(``chopsticks.hub``), several at once, over Local tunnels and the SSH fleet.

Every thread is joined under a deadline and must have ended, so a hang fails the test. A
remote call that must stay busy waits for a file the test creates when it decides.
"""

import os
import threading
import uuid

import pytest

import remote_helpers as rh
from chopsticks import hub
from chopsticks.errors import CallTimeout
from chopsticks.group import Group
from chopsticks.ssh_tunnel import SSHTunnel
from chopsticks.tunnel import Local
from test_aio import ERROR_CASES, go

# Generous: each thread makes a few calls on local or loopback agents.
THREAD_DEADLINE = 60


def in_threads(count, work):
    """``work(i)`` in ``count`` threads at once; their values (or exceptions) by ``i``."""
    outcomes = {}

    def body(i):
        try:
            outcomes[i] = work(i)
        except BaseException as exc:  # the test looks at it
            outcomes[i] = exc

    threads = [threading.Thread(target=body, args=(i,), name="worker-%d" % i) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_DEADLINE)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return [outcomes[i] for i in range(count)]


def started_pids(directory, count=1):
    """The pids of the first ``count`` agents whose ``wait_for_go`` call began in ``directory``
    (waited for, from this plain thread, for at most THREAD_DEADLINE)."""
    done = threading.Event()
    for _ in range(THREAD_DEADLINE * 100):
        pids = sorted(int(name[len("started-"):]) for name in os.listdir(directory) if name.startswith("started-"))
        if len(pids) >= count:
            return pids
        done.wait(0.01)
    raise AssertionError("the calls did not start")


@pytest.fixture
def make_tunnel(local_or_ssh, hub_thread):
    """Tunnels of one kind, closed after the test (from the main thread)."""
    kind = local_or_ssh
    made = []

    def make(index=0):
        tunnel = Local("thread-%d" % index) if kind is None else SSHTunnel(kind[0].hosts[index], options=kind[1])
        made.append(tunnel)
        return tunnel

    yield make
    for tunnel in made:
        tunnel.close()


def test_threads_share_one_tunnel_at_once(make_tunnel):
    """Six threads call one tunnel at once: their calls meet at a remote barrier of six (all in
    flight together, in one agent), each thread gets its own answer, and the tunnel runs in
    the hub thread."""
    tunnel = make_tunnel()
    barrier = uuid.uuid4().hex
    answers = in_threads(6, lambda i: (tunnel.call(rh.wait_for_peers, barrier, 6, 30), tunnel.call(rh.echo, i),
                                       tunnel.call(rh.getpid)))
    assert len({remote_thread for remote_thread, _, _ in answers}) == 6
    assert [echoed for _, echoed, _ in answers] == list(range(6))
    assert len({pid for _, _, pid in answers}) == 1
    assert tunnel.thread.name == "chopsticks-hub"


def test_a_tunnel_a_thread_connected_works_from_every_thread(make_tunnel):
    """Connected by one thread, a tunnel serves the main thread (its gevent code waits in its
    own hub meanwhile) and another thread, the same agent; closed from a third, the main
    thread's next call connects it in its own hub again."""
    tunnel = make_tunnel()
    [first] = in_threads(1, lambda _: tunnel.call(rh.getpid))
    from_main = tunnel.call(rh.getpid)
    [from_other] = in_threads(1, lambda _: tunnel.call(rh.getpid))
    in_threads(1, lambda _: tunnel.close())
    closed = tunnel.connected
    again = tunnel.call(rh.getpid)
    assert first == from_main == from_other and closed is False
    assert again != first and tunnel.thread is threading.main_thread()


def test_errors_from_threads_are_the_gevent_apis(make_tunnel):
    """A remote exception, a call timeout and an unpicklable argument raise, in a thread, the
    exception types gevent code gets."""
    tunnel = make_tunnel()

    def attempt(_):
        kinds = []
        for call, options, _ in ERROR_CASES.values():
            try:
                tunnel.call(*call, **options)
            except Exception as exc:
                kinds.append(type(exc))
        return kinds

    [kinds] = in_threads(1, attempt)
    assert kinds == [kind for _, _, kind in ERROR_CASES.values()]


def test_call_async_from_a_thread(make_tunnel, tmp_path):
    """From a thread, ``call_async`` gives a future safe there: ``result()``, ``result(timeout)``
    raising CallTimeout while the call runs on, and ``cancel()``, after which the tunnel
    has forgotten the call and still answers."""
    tunnel = make_tunnel()

    def work(_):
        quick = tunnel.call_async(rh.add, 2, 2)
        slow = tunnel.call_async(rh.wait_for_go, str(tmp_path))
        [pid] = started_pids(tmp_path)
        try:
            slow.result(timeout=0.1)
            timed_out = False
        except CallTimeout:
            timed_out = not slow.done()
        cancelled = slow.cancel()
        pending = hub.run(hub.shared(), lambda: len(tunnel.connection()._pending))
        answer = tunnel.call(rh.getpid)
        go(tmp_path, pid)
        return quick.result(), timed_out, cancelled, pending, answer == pid, type(quick).__name__

    [(value, timed_out, cancelled, pending, same_agent, kind)] = in_threads(1, work)
    assert (value, timed_out, cancelled, pending, same_agent) == (4, True, True, 0, True)
    assert kind == "ThreadCallFuture"


def test_group_fan_outs_from_threads(local_or_ssh, hub_thread, tmp_path):
    """Two threads fan out over one group at once (every host answers each), the main thread's
    fan-out over it then goes to the hub thread that runs its tunnels, and a thread's
    ``iter_call`` streams results as hosts finish, in the order the main thread lets them go."""
    kind = local_or_ssh
    tunnels = [Local("fan-%d" % i) for i in range(3)] if kind is None else \
        [SSHTunnel(host, options=kind[1]) for host in kind[0].hosts[:3]]
    with Group(tunnels) as group:
        both = in_threads(2, lambda i: group.call(rh.add, i, 10))
        assert [sorted(result.values()) for result in both] == [[10] * 3, [11] * 3]
        # the hub thread runs its tunnels now: the main thread's fan-out is handed over too
        assert list(group.call(rh.add, 5, 5).values()) == [10] * 3
        assert {t.thread.name for t in group.tunnels} == {"chopsticks-hub"}

        seen = []

        def stream():
            for _, value in group.iter_call(rh.wait_for_go, str(tmp_path)):
                seen.append(value)
                arrived.set()

        arrived = threading.Event()
        consumer = threading.Thread(target=stream)
        consumer.start()
        order = sorted(started_pids(tmp_path, 3), reverse=True)
        for pid in order:
            arrived.clear()
            go(tmp_path, pid)
            assert arrived.wait(THREAD_DEADLINE)
        consumer.join(THREAD_DEADLINE)
        assert not consumer.is_alive() and seen == order


def test_put_and_fetch_from_a_thread(make_tunnel, tmp_path):
    """A put and a fetch made from a thread move the same bytes as from gevent code."""
    tunnel = make_tunnel()
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(200000))

    def work(_):
        sent = tunnel.put(str(source), str(tmp_path / "sent.bin"))
        back = tunnel.fetch(str(tmp_path / "sent.bin"), str(tmp_path / "back.bin"))
        return sent["sha256"] == back["sha256"]

    assert in_threads(1, work) == [True]
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_a_command_runs_from_the_hub_thread(hub_thread):
    """``run_command`` in the hub thread (whose loop cannot watch children) runs the command
    to its end in the hub's pool: its output and exit status. (Asked from a plain thread: the
    main thread's hub, which watches children here, reaps every child of the process while it
    runs, and the status would then be lost: the limit ``transports.process`` states.)"""
    from chopsticks.transports.process import run_command

    [done] = in_threads(1, lambda _: hub.run(hub_thread, run_command,
                                             ["sh", "-c", "echo out; echo err >&2; exit 3"], 30, True))
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_a_died_agent_starts_again_in_the_hub_thread(make_tunnel):
    """When the agent of a tunnel the hub thread runs dies, the next call (here from the main
    thread's gevent code) starts a new agent there, not a WrongThread."""
    from chopsticks.errors import TunnelClosed

    tunnel = make_tunnel()
    [(first, died)] = in_threads(1, lambda _: (tunnel.call(rh.getpid), _raised(tunnel.call, rh.hard_exit, 3)))
    assert died is TunnelClosed
    assert tunnel.call(rh.getpid) != first and tunnel.thread.name == "chopsticks-hub"


def _raised(fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        return type(exc)
    return None


def test_a_queue_run_from_a_thread_runs_in_the_hub_thread(make_tunnel):
    """A Queue run from a plain thread is handed to the hub thread: its operations run on
    tunnels there (which then serve the main thread too), its callbacks there."""
    from chopsticks.queue import Queue

    tunnel = make_tunnel()
    queue = Queue()
    called_in = []
    first = queue.call(tunnel, rh.add, 1, 2).with_callback(lambda _: called_in.append(threading.current_thread().name))
    second = queue.call(tunnel, rh.getpid)
    in_threads(1, lambda _: queue.run(timeout=30))
    assert first.value == 3 and called_in == ["chopsticks-hub"]
    assert tunnel.thread.name == "chopsticks-hub" and tunnel.call(rh.getpid) == second.value
