"""Jobs as data: each kind pickles and runs after the trip, a call is pickled once per fan-out,
and per-host results (ErrorResult included) cross a process boundary through pickle."""

import os
import pickle
import subprocess
import sys
import threading

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
    fetched = _run(Fetch(str(src), str(tmp_path / "fetched-{host}.txt")), pair)
    assert sorted(value["local_path"] for value in fetched.values()) == [
        str(tmp_path / "fetched-j0.txt"), str(tmp_path / "fetched-j1.txt")]
    assert (tmp_path / "fetched-j0.txt").read_bytes() == b"payload\n"


def test_a_started_put_pickles_without_its_open_files(pair, tmp_path):
    """A Put's open sources stay in the process that opened them; a copy starts its own."""
    src = tmp_path / "src.txt"
    src.write_bytes(b"x" * 10)
    put = Put(str(src), str(tmp_path / "out-{host}"))
    put.start(["j0", "j1"])
    try:
        copy = pickle.loads(pickle.dumps(put))
    finally:
        put.close()
    assert copy == put and _run(copy, pair)["j0"]["size"] == 10


def test_a_call_is_pickled_once_per_fan_out(pair, monkeypatch):
    """Group.call and Queue.call on a Group pickle the function and arguments once, not per host."""
    pickled = []
    real = jobs.dumps_call
    monkeypatch.setattr(jobs, "dumps_call", lambda *a: pickled.append(a) or real(*a))
    assert dict(Group(pair).call(rh.echo, [1, 2, 3])) == {"j0": [1, 2, 3], "j1": [1, 2, 3]}
    assert len(pickled) == 1
    queue = Queue()
    result = queue.call(Group(pair), rh.add, 1, 1)
    queue.run()
    assert dict(result.value) == {"j0": 2, "j1": 2} and len(pickled) == 2


def test_a_call_that_cannot_be_sent_fails_each_host_as_it_would_alone(pair):
    """An unpicklable argument is each host's ErrorResult, with the message a tunnel raises."""
    with pytest.raises(SerializationError) as alone:
        pair[0].call(rh.echo, threading.Lock())
    result = Group(pair).call(rh.echo, threading.Lock())
    assert result["j0"] == result["j1"] == ErrorResult.from_exception(alone.value)
    assert isinstance(result["j1"].exception, SerializationError)
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
