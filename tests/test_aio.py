"""The library from asyncio programs: awaitable calls, transfers and fan-outs (``chopsticks.aio``),
over Local tunnels and the SSH fleet, driven by the hub thread while the loop runs on.

Each test runs its program with ``asyncio.run`` under a deadline, so a regression that blocks
the loop or hangs fails instead of stalling the suite. Nothing here waits on time: a remote
call that must stay busy waits for a file that the program creates when it decides
(``remote_helpers.wait_for_go``), and the program waits for conditions, not for durations.
"""

import asyncio
import hashlib
import os
import threading
import uuid

import pytest

import remote_helpers as rh
from chopsticks import aio
from chopsticks.errors import (
    CallTimeout, ConnectError, PythonNotFound, RemoteException, SerializationError, WrongThread,
)
from chopsticks.group import Group
from chopsticks.results import ErrorResult
from chopsticks.ssh_tunnel import SSHTunnel
from chopsticks.tunnel import Local

# Generous: a program starts at most a few local or loopback agents.
PROGRAM_DEADLINE = 60


def run(program):
    """``asyncio.run`` of ``program`` (a coroutine), failing if it takes over PROGRAM_DEADLINE."""
    return asyncio.run(asyncio.wait_for(program, PROGRAM_DEADLINE))


async def started_pids(directory, count=1):
    """The pids of the first ``count`` agents whose ``wait_for_go`` call began in ``directory``."""
    while True:
        pids = sorted(int(name[len("started-"):]) for name in os.listdir(directory) if name.startswith("started-"))
        if len(pids) >= count:
            return pids
        await asyncio.sleep(0.01)


def go(directory, pid):
    """Let the ``wait_for_go`` call of agent ``pid`` return."""
    open(os.path.join(str(directory), "go-%d" % pid), "w").close()


async def eventually(check):
    """Wait for ``check()`` (run in the hub thread) to be true."""
    while not await aio.run(check):
        await asyncio.sleep(0.01)


@pytest.fixture
def make_tunnel(local_or_ssh, hub_thread):
    """Tunnels of one kind (a Local, or an SSH host of the fleet), closed after the test."""
    kind = local_or_ssh
    made = []

    def make(index=0):
        if kind is None:
            tunnel = Local("aio-%d" % index)
        else:
            fleet, options = kind
            tunnel = SSHTunnel(fleet.hosts[index], options=options)
        made.append(tunnel)
        return tunnel

    yield make
    for tunnel in made:
        tunnel.close()


@pytest.fixture
def make_group(make_tunnel):
    """A Group of ``count`` tunnels of one kind."""
    return lambda count, **options: Group([make_tunnel(i) for i in range(count)], **options)


def test_an_awaited_call_leaves_the_loop_free(make_tunnel, tmp_path):
    """While an awaited call runs, the loop runs other tasks: here, the one that lets the
    remote call end (it waits for a file only that task creates). The tunnel runs in the hub
    thread, and a plain call from the loop's thread uses the same agent."""
    tunnel = make_tunnel()

    async def program():
        call = asyncio.ensure_future(tunnel.acall(rh.wait_for_go, str(tmp_path)))
        [pid] = await started_pids(tmp_path)
        go(tmp_path, pid)
        return pid, await call, tunnel.call(rh.getpid)

    started, returned, again = run(program())
    assert started == returned == again
    assert tunnel.thread is not None and tunnel.thread.name == "chopsticks-hub"


def test_awaited_calls_on_one_tunnel_are_in_flight_at_once(make_tunnel):
    """Four awaited calls on one tunnel meet at a remote barrier of four: they were all sent
    before any returned, and the agent ran them in four threads."""
    tunnel = make_tunnel()
    barrier = uuid.uuid4().hex

    async def program():
        return await asyncio.gather(*(tunnel.acall(rh.wait_for_peers, barrier, 4, 30) for _ in range(4)))

    assert len(set(run(program()))) == 4


# each case: a call, and the chopsticks error it raises in the gevent API and awaited alike
ERROR_CASES = {
    "remote exception": ((rh.raise_value_error, "boom"), {}, RemoteException),
    "timeout": ((rh.sleep_and_return, 30, 1), {"timeout": 0.2}, CallTimeout),
    "unpicklable argument": ((rh.echo, threading.Lock()), {}, SerializationError),
}


def test_errors_are_the_gevent_apis(make_tunnel):
    """A remote exception, a call timeout and an unpicklable argument raise the same exception
    types awaited as from gevent code (RemoteException naming the remote type, CallTimeout, a
    TimeoutError, SerializationError), and the tunnel stays usable after each."""
    gevent_side, awaited_side = make_tunnel(0), make_tunnel(1)
    raised = {}
    for name, (call, options, _) in ERROR_CASES.items():
        with pytest.raises(Exception) as info:
            gevent_side.call(*call, **options)
        raised[name] = [info.value]

    async def program():
        for name, (call, options, _) in ERROR_CASES.items():
            with pytest.raises(Exception) as info:
                await awaited_side.acall(*call, **options)
            raised[name].append(info.value)
        return await awaited_side.acall(rh.add, 1, 2)

    assert run(program()) == 3
    for name, (_, _, kind) in ERROR_CASES.items():
        assert [type(exc) for exc in raised[name]] == [kind, kind], name
    assert all(exc.remote_type == "builtins.ValueError" for exc in raised["remote exception"])
    assert isinstance(raised["timeout"][1], TimeoutError)
    assert gevent_side.thread is threading.main_thread() and awaited_side.thread.name == "chopsticks-hub"


def test_start_failures_are_the_gevent_apis(hub_thread, fleet, ssh_options):
    """A Local with no such interpreter (PythonNotFound) and an SSH host where nothing
    listens (ConnectError) fail the same awaited as from gevent code."""
    import dataclasses
    from fleet import free_port

    def tunnels():
        return [Local("nowhere", python="/nonexistent/python3"),
                SSHTunnel(fleet.hosts[0], options=dataclasses.replace(ssh_options, port=free_port()))]

    expected = [PythonNotFound, ConnectError]
    for tunnel, kind in zip(tunnels(), expected):
        with pytest.raises(kind):
            tunnel.call(rh.getpid)

    async def program():
        kinds = []
        for tunnel in tunnels():
            try:
                await tunnel.acall(rh.getpid)
            except Exception as exc:
                kinds.append(type(exc))
        return kinds

    kinds = run(program())
    assert [issubclass(kind, expected_kind) for kind, expected_kind in zip(kinds, expected)] == [True, True], kinds


def test_a_cancelled_call_is_forgotten_and_the_tunnel_stays_usable(make_tunnel, tmp_path):
    """Cancelling the task that awaits a call returns at once, while the remote call still
    runs (it waits for a file never created by then): the tunnel forgets the call (nothing
    pending) and the next call on it returns, from the same agent."""
    tunnel = make_tunnel()

    async def program():
        pid = await tunnel.acall(rh.getpid)
        call = asyncio.ensure_future(tunnel.acall(rh.wait_for_go, str(tmp_path)))
        await started_pids(tmp_path)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: not tunnel.connection()._pending)
        again = await tunnel.acall(rh.getpid)
        go(tmp_path, pid)  # the abandoned remote call may end now
        return pid, again

    pid, again = run(program())
    assert pid == again


def test_aiter_call_yields_as_hosts_finish(make_group, tmp_path):
    """Each host's call waits for its own go file; the program lets them end one by one, in
    an order of its own, and each result comes out of ``aiter_call`` before the next host is
    let go: results stream as hosts finish, not in the group's order, not at the end."""
    group = make_group(3)

    async def program():
        results = group.aiter_call(rh.wait_for_go, str(tmp_path))
        first = asyncio.ensure_future(results.__anext__())
        order = sorted(await started_pids(tmp_path, 3), reverse=True)
        seen = []
        for pid in order:
            go(tmp_path, pid)
            _, value = await (first if not seen else results.__anext__())
            seen.append(value)
        return order, seen, [item async for item in results]

    order, seen, rest = run(program())
    assert seen == order and rest == []


def test_acall_on_a_group_gives_a_group_result(make_group):
    """``await group.acall(...)`` is ``group.call``'s GroupResult, in the group's order, a
    failure as an ErrorResult among the values."""
    group = make_group(2)

    async def program():
        return await group.acall(rh.add, 2, 3), await group.acall(rh.raise_value_error, "no")

    added, failed = run(program())
    assert list(added.items()) == [(t.host, 5) for t in group.tunnels]
    assert all(isinstance(value, ErrorResult) and value.error_type == "chopsticks.errors.RemoteException"
               for value in failed.values())


def test_a_cancelled_fan_out_starts_no_more_hosts(make_group, tmp_path):
    """A fan-out one host at a time, cancelled while its first host's call runs: the first
    host's call is forgotten, and by then the other hosts were not started, nor ever will be
    (the fan-out's end kills its feeder before the greenlets of its hosts, whose killed call
    forgets); the first host's tunnel still works."""
    group = make_group(3, concurrency=1)

    async def program():
        async def consume():
            return [item async for item in group.aiter_call(rh.wait_for_go, str(tmp_path))]

        task = asyncio.ensure_future(consume())
        [pid] = await started_pids(tmp_path)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first = group.tunnels[0]
        await eventually(lambda: not first.connection()._pending)
        started = [t.connected for t in group.tunnels]
        again = await first.acall(rh.getpid)
        go(tmp_path, pid)
        return started, pid, again

    started, pid, again = run(program())
    assert started == [True, False, False] and pid == again


def test_closing_aiter_call_early_stops_the_fan_out(make_group, tmp_path):
    """``aclose()`` on an ``aiter_call`` after its first result, the other hosts' calls still
    running: those calls are forgotten, and their tunnels still answer."""
    group = make_group(3)

    async def program():
        results = group.aiter_call(rh.wait_for_go, str(tmp_path))
        first = asyncio.ensure_future(results.__anext__())
        pids = await started_pids(tmp_path, 3)
        go(tmp_path, pids[0])
        _, value = await first
        await results.aclose()
        for tunnel in group.tunnels:
            await eventually(lambda: not tunnel.connection()._pending)
        answers = [await tunnel.acall(rh.getpid) for tunnel in group.tunnels]
        for pid in pids[1:]:
            go(tmp_path, pid)
        return value, pids, answers

    value, pids, answers = run(program())
    assert value == pids[0] and sorted(answers) == pids


def test_a_fan_out_deadline_holds_awaited(make_group, tmp_path):
    """``deadline`` bounds an awaited fan-out as it does gevent's: hosts still running at it
    each get an ErrorResult wrapping CallTimeout."""
    group = make_group(2)

    async def program():
        return await group.acall(rh.wait_for_go, str(tmp_path), deadline=1.0)

    result = run(program())
    for _, value in result.items():
        assert isinstance(value, ErrorResult) and value.error_type == "chopsticks.errors.CallTimeout"
    for pid in [int(name[len("started-"):]) for name in os.listdir(tmp_path) if name.startswith("started-")]:
        go(tmp_path, pid)


def test_aput_and_afetch(make_group, tmp_path):
    """A file awaited up to every host of a group and back from one tunnel: the same bytes,
    the same result dicts as put and fetch give."""
    group = make_group(2)
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(300000))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    async def program():
        sent = await group.aput(str(source), str(tmp_path / "sent-{host}.bin"))
        back = await group.tunnels[0].afetch(str(tmp_path / ("sent-%s.bin" % group.tunnels[0].host)),
                                             str(tmp_path / "back.bin"))
        return sent, back

    sent, back = run(program())
    assert sent.ok and all(value["sha256"] == digest for value in sent.values())
    assert back["sha256"] == digest and (tmp_path / "back.bin").read_bytes() == source.read_bytes()


def test_a_tunnel_gevent_code_runs_is_refused_awaited_with_what_to_do(hub_thread):
    """A tunnel connected by the main thread's gevent code (before the loop ran) cannot be
    awaited on: WrongThread at once, saying to close it there first; after ``close()`` it
    reconnects in the hub thread."""
    tunnel = Local("owned-by-main")
    try:
        main_pid = tunnel.call(os.getpid)

        async def program():
            with pytest.raises(WrongThread) as info:
                await tunnel.acall(os.getpid)
            tunnel.close()  # in the main thread, which runs it
            return str(info.value), await tunnel.acall(os.getpid)

        message, pid = run(program())
        assert "close() it in thread 'MainThread' first" in message
        assert pid != main_pid and tunnel.thread.name == "chopsticks-hub"
    finally:
        tunnel.close()


def test_a_container_tunnel_awaited(podman, container_names, hub_thread):
    """A Docker tunnel (podman here) awaited on: its engine runs from the hub thread, the call
    runs in the container's Python, and ``aclose`` removes the container."""
    from conftest import IMAGES, podman_containers
    from chopsticks.containers import Docker

    tunnel = Docker(container_names + "aio", image=IMAGES["3.11"], engine=podman)

    async def program():
        version = await tunnel.acall(rh.python_version)
        running = podman_containers(container_names)
        await tunnel.aclose()
        return version, running

    version, running = run(program())
    assert version[:2] == [3, 11] and running == [container_names + "aio"]
    assert podman_containers(container_names) == []


def test_a_queue_awaited(make_tunnel):
    """``await queue.arun()`` runs a Queue's per-host FIFOs in the hub thread, the loop free."""
    from chopsticks.queue import Queue

    first, second = make_tunnel(0), make_tunnel(1)
    queue = Queue()
    results = [queue.call(first, rh.add, 1, 2), queue.call(second, rh.echo, "x"), queue.call(first, rh.add, 3, 4)]

    async def program():
        await queue.arun(timeout=30)
        return [result.value for result in results]

    assert run(program()) == [3, "x", 7]
