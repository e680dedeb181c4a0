"""A fan-out's deadline bounds the tunnels' starts too: nothing starts after it, a start under
way stops at it, and nothing that was started is left behind. Real local agents and processes."""

import json
import os
import subprocess
import sys
import time

import gevent
import pytest

import remote_helpers as rh
from chopsticks.errors import ConnectTimeout
from chopsticks.group import Group
from chopsticks.transports.process import ProcessPipe
from chopsticks.transports.ssh import HandshakeSlots
from chopsticks.tunnel import Local, SSHTunnel
from conftest import ROOT, children_of

DEADLINE_PASSED = "CallTimeout: the fan-out deadline of %ss passed first"


def _counting_python(tmp_path):
    """A python3 that logs each start to a file, then runs the real one."""
    log = tmp_path / "starts"
    script = tmp_path / "python3"
    script.write_text('#!/bin/sh\necho start >> %s\nexec %s "$@"\n' % (log, sys.executable))
    script.chmod(0o755)
    return str(script), log


def _stalling_python(tmp_path):
    """A "python3" that never reads its stdin: an agent that never starts."""
    script = tmp_path / "stall"
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    return str(script)


def test_no_start_begins_after_the_deadline(tmp_path, no_leaks):
    """300 hosts and a 1 ms deadline: every host fails saying the deadline passed, at most a
    few agents were ever started (before the fix: one per host), and none is left."""
    python, log = _counting_python(tmp_path)
    group = Group([Local("h%d" % i, python=python) for i in range(300)])
    try:
        result = group.call(rh.add, 1, 1, deadline=0.001)
    finally:
        group.close()
    assert {error.msg for _, error in result.failures()} == {DEADLINE_PASSED % 0.001}
    assert len(result) == 300 and not list(result.successful())
    starts = len(log.read_text().splitlines()) if log.exists() else 0
    assert starts <= 5, "%d agents were started after a 1 ms deadline" % starts


def test_a_start_under_way_stops_at_the_deadline(tmp_path, no_leaks):
    """Agents that never start, a 60 s connect timeout and a 1 s deadline: the fan-out ends
    at the deadline, and each start's process is killed and reaped."""
    stall = _stalling_python(tmp_path)
    group = Group([Local("s%d" % i, python=stall, connect_timeout=60) for i in range(5)])
    started = time.monotonic()
    result = group.call(rh.add, 1, 1, deadline=1.0)
    assert time.monotonic() - started < 15  # 1 s, with room for a loaded machine
    assert {error.msg for _, error in result.failures()} == {DEADLINE_PASSED % 1.0}
    assert not any(t.connected for t in group)


def test_connect_takes_the_time_it_is_given(tmp_path, no_leaks):
    """connect(timeout=) bounds a start below the tunnel's connect_timeout: ConnectTimeout
    saying so, the process stopped; with no time left, nothing is started at all."""
    tunnel = Local("slow", python=_stalling_python(tmp_path), connect_timeout=60)
    started = time.monotonic()
    with pytest.raises(ConnectTimeout, match=r"\[slow\] the agent did not start within 1.0s"):
        tunnel.connect(timeout=1.0)
    assert time.monotonic() - started < 15
    with pytest.raises(ConnectTimeout, match=r"\[slow\] the agent was not started: its 0s had passed"):
        tunnel.connect(timeout=0)
    assert not tunnel.connected


def test_waiting_for_a_handshake_slot_counts_against_the_deadline(no_leaks):
    """An SSH tunnel queued behind a full handshake bound gives up when its time is up
    (the connect timeout starts only once a slot is had; a deadline counts the wait too)."""
    slots = HandshakeSlots(1)
    tunnel = SSHTunnel("127.0.0.1", handshake_slots=slots, connect_timeout=60)
    with slots:  # the only slot is taken
        with pytest.raises(ConnectTimeout, match="no SSH handshake slot came free in time"):
            tunnel.connect(timeout=0.5)
        started = time.monotonic()
        result = Group([tunnel]).call(rh.add, 1, 1, deadline=0.5)
        assert time.monotonic() - started < 15
    assert result["127.0.0.1"].msg == DEADLINE_PASSED % 0.5


def test_a_spawn_interrupted_before_its_exec_leaves_no_child(no_leaks):
    """A start cancelled while gevent waits for the child's exec (a deadline, a kill): the
    child is killed and reaped at once, not left running until it notices its closed stdin."""
    before = set(children_of(os.getpid()))
    spawning = gevent.spawn(ProcessPipe, [sys.executable, "-c", "import time; time.sleep(60)"])
    # Runs right after the spawn's fork, before the hub has polled the child's exec pipe.
    gevent.get_hub().loop.run_callback(lambda: spawning.kill(block=False))
    spawning.join(30)
    assert spawning.dead and isinstance(spawning.value, gevent.GreenletExit)
    assert set(children_of(os.getpid())) - before == set()


def test_ten_thousand_hosts_and_a_1ms_deadline_from_the_shell(tmp_path):
    """``fanout --transport local -H 'h[1-10000]' --deadline 0.001 facts`` answers within
    seconds (it ran for minutes, starting thousands of agents), every host timed out, and
    not one agent was started."""
    python, log = _counting_python(tmp_path)
    out = subprocess.run([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", "--python", python,
                          "-H", "h[1-10000]", "--deadline", "0.001", "--format", "jsonl", "facts"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 10000, out.stderr
    assert {(line["status"], line["error"]) for line in lines} == {("timed out", DEADLINE_PASSED % 0.001)}
    assert not log.exists() or len(log.read_text().splitlines()) <= 5
