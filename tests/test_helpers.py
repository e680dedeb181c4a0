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
    assert result == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "timed_out": False, "truncated": False}
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


def run_and_peak_memory(command, **options):
    """On the remote: run ``command``, return its result and the agent's peak RSS in bytes."""
    result = run(command, **options)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return result, peak * 1024


def test_huge_output_is_bounded_on_the_host_and_says_it_was_cut(local):
    """256 MiB of output keeps max_output bytes per stream, says truncated, and never sits in memory."""
    big = 256 << 20
    result, peak = local.call(run_and_peak_memory, "yes | head -c %d; yes e | head -c %d >&2" % (big, big),
                              max_output=1 << 20)
    assert result["exit_code"] == 0 and not result["timed_out"]
    assert result["truncated"] is True
    assert result["stdout"] == "y\n" * (1 << 19) and result["stderr"] == "e\n" * (1 << 19)
    assert peak < 96 << 20, "the agent held %d MiB reading the output" % (peak >> 20)
    default = local.call(run, "yes | head -c %d" % ((16 << 20) + 1))
    assert default["truncated"] is True and len(default["stdout"]) == 16 << 20
    exact = local.call(run, "yes | head -c 1000", max_output=1000)
    assert exact["truncated"] is False and len(exact["stdout"]) == 1000


def test_a_command_that_closes_its_output_still_times_out(local):
    """A command that closes stdout and stderr but keeps running is killed at its timeout."""
    started = time.monotonic()
    result = local.call(functools.partial(run, "exec >&- 2>&-; sleep 30", timeout=0.5))
    assert result["timed_out"] and time.monotonic() - started < 10


def test_bad_max_output_is_refused(local):
    """max_output must be a non-negative int: anything else is a clear ValueError."""
    with pytest.raises(RemoteException) as info:
        local.call(run, "true", max_output="lots")
    assert info.value.type_name == "ValueError" and "max_output" in str(info.value)
