"""Jobs as data: each kind pickles and runs after the trip, a call is pickled once per fan-out,
and per-host results (ErrorResult included) cross a process boundary through pickle."""

import dataclasses
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import time

import gevent.pool
import pytest

import remote_helpers as rh
from chopsticks import CallTimeout, ErrorResult, Group, Queue, RemoteException, SerializationError
from chopsticks import jobs
from chopsticks.fanout.output import FAILED, TIMED_OUT, record
from chopsticks.jobs import Call, Connect, Fetch, Put, fan_out
from chopsticks.tunnel import Local


@pytest.fixture
def pair(no_leaks):
    tunnels = [Local("j0"), Local("j1")]
    yield tunnels
    Group(tunnels).close()


def _run(job, tunnels):
    """The job as another process would get it: pickled, then run through the engine here."""
    return dict(fan_out(pickle.loads(pickle.dumps(job)), tunnels, concurrency=4))


def test_every_job_kind_pickles_and_runs_after_the_trip(pair, tmp_path):
    """Call, Put, Fetch and Connect survive pickle and do their work on every host."""
    assert _run(Connect(), pair) == {"j0": None, "j1": None}
    assert _run(Call.of(rh.add, (2, 3)), pair) == {"j0": 5, "j1": 5}
    src = tmp_path / "src.txt"
    src.write_bytes(b"payload\n")
    put = _run(Put(str(src), str(tmp_path / "put-{host}.txt"), 0o640), pair)
    assert {host: value["remote_path"] for host, value in put.items()} == {
        host: str(tmp_path / ("put-%s.txt" % host)) for host in ("j0", "j1")}
    assert (tmp_path / "put-j1.txt").read_bytes() == b"payload\n"
    assert oct(os.stat(tmp_path / "put-j0.txt").st_mode & 0o777) == "0o640"
    fetched = _run(Fetch.for_hosts(str(src), str(tmp_path / "fetched-{host}.txt"), ["j0", "j1"]), pair)
    assert sorted(value["local_path"] for value in fetched.values()) == [
        str(tmp_path / "fetched-j0.txt"), str(tmp_path / "fetched-j1.txt")]
    assert (tmp_path / "fetched-j0.txt").read_bytes() == b"payload\n"


def test_a_started_put_stays_a_value_and_its_run_holds_the_open_files(pair, tmp_path):
    """start() returns a separate run holding the opened source; the Put itself is unchanged,
    frozen, and pickles while started; a copy starts its own."""
    src = tmp_path / "src.txt"
    src.write_bytes(b"x" * 10)
    put = Put(str(src), str(tmp_path / "out-{host}"))
    before = pickle.dumps(put)
    run = put.start(["j0", "j1"])
    try:
        assert run is not put and pickle.dumps(put) == before
        copy = pickle.loads(pickle.dumps(put))
    finally:
        run.close()
    with pytest.raises(dataclasses.FrozenInstanceError):
        put.mode = 0o600  # type: ignore[misc]
    assert copy == put and _run(copy, pair)["j0"]["size"] == 10


def test_a_call_is_pickled_once_per_fan_out(pair, monkeypatch):
    """Group.call and Queue.call on a Group prepare the function and arguments once, not per
    host: by name (plain arguments) or pickled (a tuple is not msgpack's own type)."""
    prepared = []
    for name in ("dumps_call", "named_call"):
        real = getattr(jobs, name)
        monkeypatch.setattr(jobs, name, lambda *a, real=real, name=name: prepared.append(name) or real(*a))
    assert dict(Group(pair).call(rh.echo, [1, 2, 3])) == {"j0": [1, 2, 3], "j1": [1, 2, 3]}
    assert prepared == ["named_call"]
    assert dict(Group(pair).call(rh.echo, (1, 2))) == {"j0": (1, 2), "j1": (1, 2)}
    assert prepared == ["named_call"] * 2 + ["dumps_call"]
    queue = Queue()
    result = queue.call(Group(pair), rh.add, 1, 1)
    queue.run()
    assert dict(result.value) == {"j0": 2, "j1": 2} and len(prepared) == 4


def test_a_call_that_cannot_be_sent_fails_each_host_as_it_would_alone(pair):
    """An unpicklable argument is each host's ErrorResult, with the message a tunnel raises."""
    with pytest.raises(SerializationError) as alone:
        pair[0].call(rh.echo, threading.Lock())
    result = Group(pair).call(rh.echo, threading.Lock())
    assert result["j0"] == result["j1"] == ErrorResult.from_exception(alone.value)
    assert isinstance(result["j1"].exception, SerializationError)
    assert not any(t.connected for t in pair)


def test_a_call_too_large_for_a_message_fails_each_host_in_that_hosts_words(pair, monkeypatch):
    """Over one message's limit, each host's ErrorResult reads as that tunnel's own call raises,
    [host] prefix included, in Group.call and Queue.run alike; nothing connects."""
    from chopsticks.wire import protocol
    monkeypatch.setattr(protocol, "MAX_MESSAGE", 1 << 20)
    big = b"x" * (2 << 20)
    alone = {}
    for tunnel in pair:
        with pytest.raises(SerializationError) as info:
            tunnel.call(rh.echo, big)
        alone[tunnel.host] = str(info.value)
    assert alone["j1"].startswith("[j1] the call's arguments pickle to")

    def texts(results):
        assert all(isinstance(r.exception, SerializationError) for r in results.values())
        return {host: str(r.exception) for host, r in results.items()}

    assert texts(Group(pair).call(rh.echo, big)) == alone
    queue = Queue()
    queued = queue.call(Group(pair), rh.echo, big)
    queue.run()
    assert texts(queued.value) == alone
    assert not any(t.connected for t in pair)


def test_submit_and_run_call_refuse_a_call_that_cannot_be_sent(pair):
    """A refused Call raises its SerializationError from submit and run_call (with or without
    a timeout) before anything connects: no path sends its empty payload."""
    refused = Call.for_hosts(rh.echo, (threading.Lock(),))
    assert refused.refusal is not None
    for call in (refused, dataclasses.replace(refused, timeout=30)):
        with pytest.raises(SerializationError, match="cannot send argument 1"):
            pair[0].submit(call)
        with pytest.raises(SerializationError, match="cannot send argument 1"):
            pair[0].run_call(call)
    assert not pair[0].connected


def test_an_unpicklable_argument_fails_before_connecting_even_with_a_timeout(pair):
    """tunnel.call(timeout=) pickles before it connects: SerializationError, no agent started."""
    with pytest.raises(SerializationError):
        pair[0].call(rh.echo, threading.Lock(), timeout=30)
    with pytest.raises(SerializationError):
        pair[0].call_async(rh.echo, threading.Lock())
    assert not pair[0].connected


def test_iter_fetch_refuses_a_shared_path_when_called_and_iter_put_a_bad_mode(pair, tmp_path):
    """Group.iter_fetch with a template giving two hosts one path, and Group.iter_put with a
    bad mode, raise when called (before any next(), before any host is contacted)."""
    group = Group(pair)
    with pytest.raises(ValueError, match="same path"):
        group.iter_fetch("/etc/hostname", str(tmp_path / "same.txt"))
    with pytest.raises(ValueError, match="0 to 0o7777"):
        group.iter_put(__file__, str(tmp_path / "put-{host}"), 0o10000)
    assert not any(t.connected for t in pair) and not list(tmp_path.iterdir())


def test_queue_pickles_each_call_when_run_starts(pair, monkeypatch):
    """An argument changed between queue.call() and run() is sent as it is at run(); each
    queued call is still prepared (``Call.of``) once, for every tunnel of a Group target."""
    pickled = []
    real = jobs.Call.of.__func__
    monkeypatch.setattr(jobs.Call, "of", classmethod(lambda cls, *a, **k: pickled.append(a) or real(cls, *a, **k)))
    value = [1]
    queue = Queue()
    alone = queue.call(pair[0], rh.echo, value)
    both = queue.call(Group(pair), rh.echo, value)
    value.append(2)
    assert pickled == []
    queue.run()
    assert alone.value == [1, 2] and dict(both.value) == {"j0": [1, 2], "j1": [1, 2]}
    assert len(pickled) == 2


def test_queue_runs_every_fifo_at_once_whatever_the_open_files_bound(pair, tmp_path, monkeypatch):
    """Queue.run starts every host's FIFO together, not bounded by default_concurrency: one host
    reading a named pipe finishes only because the other host's FIFO writes it meanwhile."""
    import chopsticks.queue
    monkeypatch.setattr(chopsticks.queue, "default_concurrency", lambda: 1, raising=False)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    queue = Queue()
    reader = queue.call(pair[0], pathlib.Path(fifo).read_bytes)  # blocks until a writer comes
    writer = queue.call(pair[1], pathlib.Path(fifo).write_bytes, b"met")
    queue.run(timeout=60)
    assert (reader.value, writer.value) == (b"met", 3)


def test_a_deadline_crosses_as_seconds_left_and_ends_at_bounds_the_fan_out(pair):
    """seconds_left gives what a deadline has left (never below 0); fan_out given an ends_at
    already past starts no host and states the deadline it was given."""
    assert jobs.seconds_left(None) is None and jobs.deadline_end(None) is None
    assert jobs.seconds_left(time.monotonic() - 1) == 0.0
    assert 0 < jobs.seconds_left(jobs.deadline_end(60)) <= 60
    results = dict(fan_out(Connect(), pair, 2, deadline=5, ends_at=time.monotonic()))
    assert sorted(results) == ["j0", "j1"]
    assert all(isinstance(r.exception, CallTimeout) and "deadline of 5s" in r.msg for r in results.values())
    assert not any(t.connected for t in pair)


def test_a_queue_callback_that_raises_stops_run(pair):
    """Queue.run raises what a callback raised (a call's own failure is a value)."""
    queue = Queue()
    queue.call(pair[0], rh.add, 1, 1).with_callback(lambda value: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        queue.run()


def test_error_results_round_trip_through_pickle(local):
    """CallTimeout and RemoteException come back as themselves; an unpicklable one keeps its text."""
    timed_out = ErrorResult.from_exception(CallTimeout("[h] call did not finish within 1s"))
    back = pickle.loads(pickle.dumps(timed_out))
    assert back == timed_out and isinstance(back.exception, CallTimeout)
    assert record("h", back, lambda value: "ok")["status"] == TIMED_OUT

    with pytest.raises(RemoteException) as info:
        local.call(rh.raise_value_error, "boom")
    remote = ErrorResult.from_exception(info.value)
    back = pickle.loads(pickle.dumps(remote))
    assert back == remote and "raise ValueError" in back.tb
    assert isinstance(back.exception, RemoteException) and str(back.exception) == str(info.value)
    assert back.exception.remote_type == "builtins.ValueError"
    assert back.error_type == "chopsticks.errors.RemoteException"

    odd = ErrorResult("ValueError: holds a lock", None, ValueError(threading.Lock()))
    back = pickle.loads(pickle.dumps(odd))
    assert back == odd and back.exception is None and back.error_type == "builtins.ValueError"
    assert record("h", back, lambda value: "ok") == {"host": "h", "status": FAILED,
                                                     "error": "ValueError: holds a lock"}


SHARD = """
import pickle, sys
from chopsticks.jobs import fan_out
from chopsticks.tunnel import Local
job, names = pickle.load(sys.stdin.buffer)
tunnels = [Local(name) for name in names]
try:
    sys.stdout.buffer.write(pickle.dumps(list(fan_out(job, tunnels, concurrency=8))))
finally:
    for tunnel in tunnels:
        tunnel.close()
"""


def _in_another_process(job, names):
    """Run ``job`` on Local tunnels opened by a child Python: the results it sends back."""
    done = subprocess.run([sys.executable, "-c", SHARD], input=pickle.dumps((job, names)), capture_output=True,
                          timeout=120, check=True)
    return dict(pickle.loads(done.stdout))


def test_a_job_runs_in_another_process_and_its_results_come_back(no_leaks):
    """A job and host names sent to another process run there; values and errors come back."""
    pids = _in_another_process(Call.of(os.getpid), ["s0", "s1"])
    assert sorted(pids) == ["s0", "s1"] and len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    failed = _in_another_process(Call.of(int, ("not a number",), timeout=30), ["s0"])["s0"]
    assert isinstance(failed, ErrorResult) and failed.msg.startswith("ValueError: invalid literal")
    assert isinstance(failed.exception, RemoteException) and "Traceback" in failed.tb


def test_a_warm_host_that_stopped_reading_delays_only_itself(pair):
    """A call its stopped agent cannot take whole costs the other host nothing; the deadline
    fails it, closes its tunnel (the frame was torn) and the next call starts a new agent."""
    import signal
    Group(pair).connect().raise_failures()
    pid = pair[1].remote_info["pid"]
    payload = b"x" * (900 << 10)  # one frame, more than a pipe holds
    os.kill(pid, signal.SIGSTOP)
    try:
        results = dict(fan_out(Call.of(rh.echo, (payload,)), pair, concurrency=4, deadline=3))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert results["j0"] == payload
    assert isinstance(results["j1"].exception, CallTimeout) and "deadline of 3s" in results["j1"].msg
    assert pair[1].call(rh.echo, 7) == 7
    assert pair[1].remote_info["pid"] != pid


def test_call_async_returns_while_the_agent_is_not_reading(local):
    """call_async returns before a call the pipe cannot take whole is written; it runs once
    the agent reads again."""
    import signal
    local.connect()
    pid = local.remote_info["pid"]
    payload = b"y" * (900 << 10)
    os.kill(pid, signal.SIGSTOP)
    try:
        future = local.call_async(rh.echo, payload)
        assert not future.done()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert future.result(timeout=30) == payload
    assert local.call(rh.echo, 1) == 1


def test_a_warm_fan_out_keeps_its_concurrency_bound(pair, tmp_path):
    """Calls begun on connected tunnels count against the bound: with a bound of 1 no call
    ever runs alongside another."""
    Group(pair).connect().raise_failures()
    results = dict(fan_out(Call.of(rh.running_alongside, (str(tmp_path), 0.3)), pair, concurrency=1))
    assert results == {"j0": 1, "j1": 1}


def test_warm_calls_with_a_timeout_take_no_greenlet_per_host(pair, monkeypatch):
    """On connected tunnels a fan-out's calls, timeout or not, begin at once: the engine spawns
    nothing per host; a timeout that expires fails each host with CallTimeout from a hub timer,
    and the tunnels stay usable."""
    group = Group(pair)
    group.connect().raise_failures()
    spawned = []
    real = gevent.pool.Group.spawn
    monkeypatch.setattr(gevent.pool.Group, "spawn", lambda self, *a, **k: spawned.append(a) or real(self, *a, **k))
    assert dict(group.call(rh.echo, 7, timeout=30)) == {"j0": 7, "j1": 7}
    late = group.call(time.sleep, 30, timeout=0.5)
    assert all(isinstance(late[h].exception, CallTimeout) for h in ("j0", "j1"))
    assert "call did not finish within 0.5s" in late["j0"].msg
    assert spawned == []
    assert dict(group.call(rh.echo, 8)) == {"j0": 8, "j1": 8}
