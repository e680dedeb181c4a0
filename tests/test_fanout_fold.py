"""Folded output from the shell (``--fold``): run's hosts with the same output and status shown
once under a folded range, a census of values for facts and call, the default on a terminal,
JSON, bad input. Real CLI subprocesses over 30 local agents, and the SSH fleet."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from chopsticks.fanout import folded
from chopsticks.fanout.hosts import expand
from test_fanout import HERE, ROOT, fanout, local, ssh_args
from test_fanout_output import no_traceback, raw_controls

HOSTS = "h-[1-30]"
ALL = set(expand(HOSTS))


def arrival(directory):
    """A shell snippet setting $n to 1 for the first host to run it, 2 for the next, and so on."""
    return "n=1; while ! mkdir %s/$n 2>/dev/null; do n=$((n+1)); done; " % directory


def hosts_of(text):
    """The hosts of a folded heading's range, 'h-[1,3-5] (4 hosts)', expanded."""
    ranges = text.split(" (")[0]
    return [name for pattern in re.split(r",(?![^\[]*\])", ranges) for name in expand(pattern)]


def blocks(stdout):
    """A folded run's output: {heading line: [output lines]}."""
    found, heading = {}, None
    for line in stdout.splitlines():
        if line.startswith(" "):
            found[heading].append(line)
        elif line and " hosts in " not in line:
            heading = line
            found[heading] = []
    return found


def test_run_folds_hosts_with_the_same_output_and_exit_status(tmp_path):
    """30 hosts, 10 printing 'small' and exiting 1, 20 'big': two blocks, each under its folded range."""
    command = arrival(tmp_path) + 'if [ $n -le 10 ]; then echo small; exit 1; fi; echo big; echo warning >&2'
    result = local("-H", HOSTS, "--fold", "run", command)
    no_traceback(result)
    assert result.returncode == 1
    found = blocks(result.stdout)
    assert len(found) == 2, result.stdout
    (small, small_lines), = [(h, lines) for h, lines in found.items() if " failed  exit 1" in h]
    (big, big_lines), = [(h, lines) for h, lines in found.items() if " ok  exit 0" in h]
    assert "(10 hosts)" in small and small_lines == ["    small"]
    assert "(20 hosts)" in big and big_lines == ["    big", "  ! warning"]
    assert len(hosts_of(small)) == 10 and set(hosts_of(small)) | set(hosts_of(big)) == ALL
    assert "30 hosts in " in result.stdout and "20 ok, 10 failed, 0 timed out" in result.stdout


def test_facts_fold_into_a_census_of_each_fact():
    """facts --fold: each fact once, its one value with the count and the folded range of all 30 hosts."""
    result = local("-H", HOSTS, "--fold", "--format", "table", "facts", "hostname", "arch", "python_version")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for fact, value in (("hostname", os.uname().nodename), ("arch", os.uname().machine),
                        ("python_version", None)):
        at = lines.index("%s (1 value)" % fact)
        text, count, hosts = lines[at + 1].split()
        assert (value is None or text == value) and count == "30" and hosts == HOSTS


def test_call_census_counts_values_and_folds_failures_by_their_error(tmp_path):
    """call --fold: 'big' on 15 hosts and 'small' on 10, most first; the 5 that raised folded under their error."""
    result = local("-H", HOSTS, "--fold", "call", "cli_fold_values:sorted_into", "--json-args",
                   json.dumps([str(tmp_path), 5, 10]))
    no_traceback(result)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "value (2 values)"
    big, small = lines[1].split(), lines[2].split()
    assert big[:2] == ["big", "15"] and small[:2] == ["small", "10"]
    failed_heading, error = lines[3], lines[4]
    assert failed_heading.endswith("(5 hosts)  failed") and error == "    ValueError: no luck"
    groups = [hosts_of(big[2]), hosts_of(small[2]), hosts_of(failed_heading)]
    assert [len(g) for g in groups] == [15, 10, 5] and set().union(*groups) == ALL


def test_a_census_shows_ten_values_and_sums_up_the_rest(tmp_path):
    """30 different values: the census heading says 30, shows 10 and one line for the 20 others and their hosts."""
    result = local("-H", HOSTS, "--fold", "call", "cli_fold_values:arrival", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "value (30 values)" and len([line for line in lines if line.startswith("  ")]) == 11
    rest = lines[11].split()
    assert rest[:4] == ["(20", "other", "values)", "20"] and len(hosts_of(rest[4])) == 20


def test_json_with_fold_adds_folded_groups_and_a_census(tmp_path):
    """--format json --fold: every result still there, plus 'folded' and 'census' with expandable ranges."""
    result = local("-H", HOSTS, "--format", "json", "--fold", "facts", "arch")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert len(document["results"]) == 30
    assert document["folded"] == [{"hosts": HOSTS, "count": 30, "status": "ok",
                                   "value": {"arch": os.uname().machine}}]
    assert document["census"] == {"arch": [{"value": os.uname().machine, "count": 30, "hosts": HOSTS}]}
    failing = local("-H", "a,b", "--format", "json", "--fold", "call", "remote_helpers:raise_value_error", "x")
    assert json.loads(failing.stdout)["folded"] == [{"hosts": "a,b", "count": 2, "status": "failed",
                                                     "error": "ValueError: x"}]


def test_fold_without_a_format_prints_the_folded_table_in_a_pipe():
    """--fold chooses the table even when stdout is a pipe (where the default is jsonl)."""
    result = local("-H", HOSTS, "--fold", "run", "echo same")
    assert result.stdout.splitlines()[:2] == ["h-[1-30] (30 hosts)  ok  exit 0", "    same"]


def test_folded_output_escapes_what_hosts_and_names_send():
    """Control characters in a host name and in the output show as escapes in a folded block and census."""
    run = local("-H", "evil\x1b-[1-3]", "--fold", "run", "printf 'x\\033[2J\\r\\n'")
    assert run.stdout.splitlines()[:2] == ["evil\\x1b-[1-3] (3 hosts)  ok  exit 0", "    x\\x1b[2J\\r"]
    call = local("-H", "evil\x1b-[1-3]", "--fold", "call", "remote_helpers:echo", "\x1b]0;owned\x07")
    assert "\\x1b]0;owned\\x07  3  evil\\x1b-[1-3]" in call.stdout
    assert raw_controls(run.stdout + call.stdout) == []


def on_a_terminal(*argv):
    """Run the CLI over local agents with stdout on a pseudo-terminal; what it showed there."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    attributes = termios.tcgetattr(follower)
    attributes[1] &= ~termios.ONLCR  # newlines as the program wrote them
    termios.tcsetattr(follower, termios.TCSANOW, attributes)
    proc = subprocess.Popen([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", *argv], cwd=HERE,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            assert ready, "no output from the CLI"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the CLI closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(60) in (0, 1)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen.decode()


def test_run_folds_by_default_on_a_terminal_and_not_with_no_fold():
    """On a terminal, run over 30 hosts with one output prints one block; --no-fold prints 30."""
    shown = on_a_terminal("-H", HOSTS, "run", "echo same")
    assert shown.splitlines()[:2] == ["h-[1-30] (30 hosts)  ok  exit 0", "    same"]
    unfolded = on_a_terminal("-H", HOSTS, "--no-fold", "run", "echo same")
    assert unfolded.count("  ok  exit 0\n    same\n") == 30


def test_the_default_folds_only_when_that_at_least_halves_the_blocks():
    """Without --fold: run on a terminal folds when its groups are at most half its hosts; never otherwise."""
    def records(*outputs):
        return [{"host": "h-%d" % i, "status": "ok", "value": {"stdout": out}} for i, out in enumerate(outputs)]
    assert folded.wanted(None, "run", records("a", "a", "b", "b"), tty=True)
    assert not folded.wanted(None, "run", records("a", "a", "b"), tty=True)
    assert not folded.wanted(None, "run", records("a", "a"), tty=False)
    assert not folded.wanted(None, "facts", records("a", "a"), tty=True)
    assert folded.wanted(True, "facts", records("a", "b"), tty=False)
    assert not folded.wanted(False, "run", records("a", "a"), tty=True)


def test_a_table_in_a_pipe_is_not_folded_by_default():
    """--format table in a pipe keeps a block per host: the default folds on a terminal only."""
    result = local("-H", "h-[1-3]", "--format", "table", "run", "echo same")
    assert result.stdout.count("  ok  exit 0\n    same\n") == 3


@pytest.mark.parametrize("argv, message", [
    (["--fold", "--format", "jsonl", "facts"], "--fold is for --format table or json (jsonl prints each host"),
    (["facts", "--format", "jsonl", "--fold"], "--fold is for --format table or json"),
    (["--fold=yes", "facts"], "argument --fold/--no-fold: ignored explicit argument 'yes'"),
])
def test_bad_fold_input_is_one_line_and_exit_2(argv, message):
    """--fold with jsonl (or given a value) is one line of usage error, exit 2, nothing run."""
    result = local("-H", HOSTS, *argv)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def test_run_folds_over_ssh(fleet):
    """Over the SSH fleet, one output from every host is one block under the fleet's folded address range."""
    last = int(fleet.hosts[-1].rsplit(".", 1)[1])
    result = fanout(*ssh_args(fleet), "-H", ",".join(fleet.hosts), "--fold", "run", "echo $((6 * 7))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["127.0.0.[2-%d] (%d hosts)  ok  exit 0" % (last, len(fleet.hosts)),
                                              "    42"]
