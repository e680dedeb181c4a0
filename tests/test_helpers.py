"""chopsticks.helpers run on real agents: commands, their output, and timeouts that kill the group."""

import functools
import os
import time

import pytest

from chopsticks import RemoteException
from chopsticks.helpers import output_lines, run


def test_run_returns_exit_code_and_both_streams(local):
    """run gives the exit code, stdout and stderr of a shell command or an argv list."""
    result = local.call(run, "echo out; echo err >&2; exit 3")
    assert result == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "timed_out": False}
    assert local.call(run, ["printf", "%s", "a b"])["stdout"] == "a b"
    assert local.call(run, "cat", input="fed")["stdout"] == "fed"


def test_run_timeout_kills_the_whole_process_group(local, tmp_path):
    """A timeout kills the command and its background children."""
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    # timeout= would be the tunnel's own; partial hands it to run
    result = local.call(functools.partial(run, "sleep 30 & echo $! > %s; wait" % marker, timeout=0.5))
    assert result["timed_out"] and result["exit_code"] != 0
    assert time.monotonic() - started < 10
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while os.path.exists("/proc/%d" % child) and time.monotonic() < deadline:
        with open("/proc/%d/stat" % child) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.05)
    alive = os.path.exists("/proc/%d" % child)
    if alive:
        with open("/proc/%d/stat" % child) as f:
            alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
    assert not alive, "the background child survived the timeout"


def test_output_lines(local):
    """output_lines returns stdout lines, and raises with stderr when the command fails."""
    assert local.call(output_lines, "printf 'a\\nb\\n'") == ["a", "b"]
    with pytest.raises(RemoteException) as info:
        local.call(output_lines, "echo nope >&2; exit 2")
    assert info.value.type_name == "CalledProcessError"
    with pytest.raises(RemoteException) as info:
        local.call(run, ["/nonexistent/command"])
    assert info.value.type_name == "FileNotFoundError"
