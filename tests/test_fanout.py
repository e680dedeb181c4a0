"""``python -m chopsticks.fanout``, run as a real command over local agents and the SSH fleet."""

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from conftest import require
from fleet import children_of

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ``python -m chopsticks.fanout``, with the system ssh_config and global known_hosts pointed at
# nothing (as conftest does in-process): what the machine's /etc/ssh says is not under test.
CLI = ("import runpy; from chopsticks.transports import ssh_config, ssh_options; "
       "ssh_config.SYSTEM_CONFIG = '/nonexistent/chopsticks-tests/ssh_config'; "
       "ssh_options.GLOBAL_KNOWN_HOSTS = (); "
       "runpy.run_module('chopsticks.fanout', run_name='__main__', alter_sys=True)")


def fanout(*argv, input=None, timeout=60):
    """Run the CLI (from the tests' directory, so ``remote_helpers`` imports); a CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", CLI, *argv], cwd=HERE, env=env, text=True,
                          stdin=subprocess.DEVNULL if input is None else None, input=input,
                          capture_output=True, timeout=timeout)


def records(result):
    return {r["host"]: r for r in map(json.loads, result.stdout.splitlines())}


def local(*argv, **kwargs):
    return fanout("--transport", "local", *argv, **kwargs)


def ssh_args(fleet):
    return ["-p", str(fleet.port), "-i", fleet.key, "--known-hosts", fleet.known_hosts, "-F", "", "--no-agent"]


# -- bad input: one line, exit status 2, nothing run ----------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["-H", "web-[1-3", "facts"], "unclosed '[' in 'web-[1-3'"),
    (["-H", "web-[x-]", "facts"], "malformed range [x-]"),
    (["facts"], "the host list is empty"),
    (["-H", ",", "facts"], "the host list is empty"),
    (["-f", "/nonexistent/hosts", "facts"], "cannot read hosts file '/nonexistent/hosts': No such file"),
    (["-H", "a", "-c", "0", "facts"], "--concurrency: must be a number more than 0, got 0"),
    (["-H", "a", "--timeout", "inf", "facts"], "--timeout: must be a number more than 0 and at most 2000000, got inf"),
    (["-H", "a", "--timeout", "nan", "facts"], "--timeout: must be a number more than 0 and at most 2000000, got nan"),
    (["-H", "a", "--timeout", "-1", "facts"], "--timeout: must be a number more than 0"),
    (["-H", "a", "--timeout", "1e300", "run", "true"], "--timeout: must be a number more than 0 and at most 2000000"),
    (["-H", "a", "--deadline", "nan", "facts"], "--deadline: must be a number more than 0 and at most 2000000"),
    (["-H", "a", "--connect-timeout", "inf", "facts"], "--connect-timeout: must be a number more than 0 and at most"),
    (["-H", "a", "--timeout", "soon", "facts"], "--timeout: 'soon' is not a number"),
    (["-H", "a", "facts", "hostname", "shoe_size"], "unknown fact 'shoe_size'; facts are: hostname, fqdn"),
    (["-H", "a", "call", "no_such_module:f"], "no module named 'no_such_module'"),
    (["-H", "a", "call", "remote_helpers:no_such_function"], "remote_helpers has no attribute 'no_such_function'"),
    (["-H", "a", "call", "remote_helpers:_BARRIERS"], "remote_helpers:_BARRIERS is not callable"),
    (["-H", "a", "call", "remote_helpers"], "expected MODULE:FUNCTION, got 'remote_helpers'"),
    (["-H", "a", "call", "remote_helpers:add", "--json-args", "[1,"], "--json-args is not valid JSON"),
    (["-H", "a", "call", "remote_helpers:add", "--json-args", '{"a": 1}'], "must be a JSON array, got an object"),
    (["-H", "a", "call", "remote_helpers:add", "--json-kwargs", "[1]"], "must be a JSON object, got an array"),
    (["-H", "a", "run", " "], "the command is empty"),
    (["-H", "a", "reboot"], "invalid choice: 'reboot'"),
    (["-H", "a", "--user", "root", "facts"], "--user is not for --transport local"),
    (["-H", "a", "--image", "img", "facts"], "--image is for --transport docker"),
    (["--transport", "docker", "--sudo", "-H", "a", "facts"], "--sudo is not for --transport docker"),
    (["-H", "web/1", "--transport", "docker", "--image", "img", "facts"], "'web/1' is not a container name"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message):
    """Each bad input (ranges, files, numbers such as inf and nan, names, JSON) is one line, exit 2."""
    result = local(*argv)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("python -m chopsticks.fanout: error: ")


def test_a_bad_ssh_host_is_a_usage_error():
    result = fanout("-H", "web-1:http", "facts")
    assert result.returncode == 2
    assert "bad host 'web-1:http': port 'http' is not a number" in result.stderr


def test_an_import_error_in_the_module_is_one_line(tmp_path):
    (tmp_path / "broken_mod.py").write_text("import no_such_dependency\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]))
    result = subprocess.run([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", "-H", "a", "call",
                             "broken_mod:f"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("python -m chopsticks.fanout: error: cannot import broken_mod: "
                                     "No module named 'no_such_dependency'")


def test_help_reads_well():
    result = fanout("--help")
    assert result.returncode == 0
    for words in ("facts", "call", "run", "web-[001-500]", "--concurrency", "--format", "exit status"):
        assert words in result.stdout


# -- facts, call, run over local agents ------------------------------------------------------

def test_facts_as_json_lines_one_per_host():
    result = local("-H", "agent-[1-3]", "facts", "hostname", "cpus", "python_version")
    assert result.returncode == 0, result.stderr
    got = records(result)
    assert sorted(got) == ["agent-1", "agent-2", "agent-3"]
    for entry in got.values():
        assert entry["status"] == "ok"
        assert entry["value"]["hostname"] == os.uname().nodename
        assert entry["value"]["cpus"] >= 1 and entry["value"]["python_version"][0] == 3
    assert "3 hosts in" in result.stderr and "3 ok, 0 failed, 0 timed out" in result.stderr


def test_facts_table_with_every_column_it_promises():
    result = local("-H", "agent-1,agent-2", "--format", "table", "facts")
    assert result.returncode == 0, result.stderr
    header, first, second = result.stdout.splitlines()[:3]
    for heading in ("host", "status", "hostname", "os", "kernel", "mem avail/total", "load", "python"):
        assert heading in header
    assert first.startswith("agent-1 ") and " ok " in first and second.startswith("agent-2 ")
    assert result.stdout.rstrip().endswith("2 ok, 0 failed, 0 timed out")


def test_call_with_string_json_and_keyword_arguments():
    result = local("-H", "a", "call", "remote_helpers:add", "--json-args", "[2, 3]")
    assert records(result)["a"]["value"] == 5
    result = local("-H", "a", "call", "remote_helpers:echo", "hello world")
    assert records(result)["a"]["value"] == "hello world"
    result = local("-H", "a", "call", "remote_helpers:add", "--json-kwargs", '{"a": [1], "b": [2]}')
    assert records(result)["a"]["value"] == [1, 2]


def test_a_remote_exception_is_a_failed_host_with_its_traceback_and_exit_1():
    result = local("-H", "a,b", "--format", "json", "call", "remote_helpers:raise_value_error", "boom")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert [r["host"] for r in document["results"]] == ["a", "b"]
    entry = document["results"][0]
    assert entry["status"] == "failed" and entry["error"] == "ValueError: boom"
    assert "raise ValueError(message)" in entry["traceback"]
    assert document["summary"] == dict(document["summary"], hosts=2, ok=0, failed=2, timed_out=0, unfinished=0)


def test_run_reports_exit_code_stdout_and_stderr_and_nonzero_counts_as_failed():
    result = local("-H", "a", "run", "echo out; echo err >&2; exit 3")
    entry = records(result)["a"]
    assert result.returncode == 1
    assert entry["status"] == "failed"
    assert entry["value"] == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "timed_out": False,
                              "truncated": False}
    assert local("-H", "a", "run", "true").returncode == 0


def test_run_table_shows_each_hosts_output():
    result = local("-H", "a", "--format", "table", "run", "echo out; echo err >&2; exit 3")
    assert result.stdout.splitlines()[:3] == ["a  failed  exit 3", "    out", "  ! err"]


def test_run_timeout_kills_the_command_and_counts_as_timed_out():
    started = time.monotonic()
    result = local("-H", "a,b", "--timeout", "0.5", "run", "sleep 30")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert {r["status"] for r in records(result).values()} == {"timed out"}
    assert "0 ok, 0 failed, 2 timed out" in result.stderr


def test_a_command_still_running_at_the_deadline_is_killed_and_reported(tmp_path):
    """--deadline kills each host's running command (its whole process group), and shows what it printed."""
    pids = tmp_path / "pids"
    started = time.monotonic()
    result = local("-H", "a,b", "--deadline", "2", "run", "echo started; sleep 300 & echo $! >> %s; wait" % pids)
    left = [int(pid) for pid in pids.read_text().split() if _alive(int(pid))]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "commands still running after the deadline"
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    for entry in records(result).values():
        assert entry["status"] == "timed out" and entry["value"]["stdout"] == "started\n"
        assert entry["value"]["timed_out"] is True


def test_call_timeout_counts_as_timed_out_and_the_others_finish():
    result = local("-H", "a,b", "--timeout", "0.5", "--format", "json", "call", "remote_helpers:sleep_and_return",
                   "--json-args", "[30, 1]")
    document = json.loads(result.stdout)
    assert {r["status"] for r in document["results"]} == {"timed out"}
    assert result.returncode == 1


def test_options_after_the_subcommand_and_hosts_from_stdin():
    result = fanout("facts", "hostname", "--transport", "local", "--format", "json",
                    input="s-1\ns-[2-3]  # comment\n")
    assert result.returncode == 0, result.stderr
    assert [r["host"] for r in json.loads(result.stdout)["results"]] == ["s-1", "s-2", "s-3"]


def test_remote_output_goes_to_stderr_as_json_logs():
    result = local("-H", "a", "--log-format", "json", "call", "remote_helpers:print_lines", "hello from afar")
    assert result.returncode == 0
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert {"event": "remote_output", "host": "a", "line": "hello from afar"}.items() <= events[0].items()
    quiet = local("-H", "a", "-q", "call", "remote_helpers:print_lines", "hello from afar")
    assert "hello from afar" not in quiet.stderr


# -- a terminal: progress bar and Ctrl-C -------------------------------------------------------

def test_progress_bar_on_a_terminal_and_none_in_a_pipe():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        proc = subprocess.Popen([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", "-H", "p-[1-3]",
                                 "facts", "hostname"], cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower)
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            assert ready, "no output from the CLI"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the CLI closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(30) == 0
        proc.stdout.close()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    text = seen.decode()
    assert "0/3 [" in text and "host/s" in text and "3 ok, 0 failed, 0 timed out" in text
    assert "/3 [" not in local("-H", "p-[1-3]", "facts", "hostname").stderr


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_ctrl_c_closes_every_tunnel_prints_what_finished_and_exits_130(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", "-H", "c-[1-4]",
                             "call", "remote_helpers:first_ones_fast", "--json-args", json.dumps([str(tmp_path), 2])],
                            cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        finished = [proc.stdout.readline(), proc.stdout.readline()]
        assert all('"value": "fast"' in line for line in finished), finished
        deadline = time.monotonic() + 20
        while len(children_of(proc.pid)) < 4 and time.monotonic() < deadline:  # slow ones may still start
            time.sleep(0.05)
        agents = children_of(proc.pid)
        assert len(agents) == 4
        proc.send_signal(signal.SIGINT)
        rest, errors = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    interrupted = [json.loads(line) for line in rest.splitlines()]  # the hosts left, by name
    assert [r["status"] for r in interrupted] == ["interrupted", "interrupted"]
    assert sorted(r["host"] for r in interrupted + [json.loads(line) for line in finished]) == \
        ["c-1", "c-2", "c-3", "c-4"]
    assert "4 hosts in" in errors and "2 ok, 0 failed, 0 timed out, 2 unfinished (interrupted)" in errors
    assert "Traceback" not in errors
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in agents) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in agents), "agents left running after Ctrl-C"


def test_ctrl_c_while_hosts_flood_output_is_no_crash():
    """Ctrl-C lands while the hub reads a tunnel: it must reach the fan-out, not the read."""
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", "-H", "c-[1-4]",
                                 "-q", "call", "remote_helpers:flood_stdout"],
                                cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while len(children_of(proc.pid)) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            _, errors = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, errors[-2000:]
        assert "Traceback" not in errors and "failed with KeyboardInterrupt" not in errors, errors[-2000:]
        assert "4 unfinished (interrupted)" in errors


# -- over SSH -------------------------------------------------------------------------------------

def test_facts_over_ssh_with_a_dead_host_and_an_unknown_one(fleet):
    hosts = ",".join(fleet.hosts[:3])
    result = fanout(*ssh_args(fleet), "-H", hosts + ",127.0.0.250,no-such-host.invalid", "--connect-timeout", "5",
                    "--format", "json", "facts", "hostname", "ip")
    assert result.returncode == 3, result.stderr  # some unreachable, none failed otherwise
    document = json.loads(result.stdout)
    by_host = {r["host"]: r for r in document["results"]}
    assert [r["host"] for r in document["results"]][:3] == fleet.hosts[:3]
    for host in fleet.hosts[:3]:
        assert by_host[host]["status"] == "ok" and by_host[host]["value"]["hostname"]
    # 127.0.0.250 answers on the fleet's port too, but its key is not in known_hosts
    assert by_host["127.0.0.250"]["error"].startswith("UnknownHostKey:")
    assert by_host["no-such-host.invalid"]["error"].startswith("ConnectError: cannot resolve host name")
    assert {by_host[host]["status"] for host in ("127.0.0.250", "no-such-host.invalid")} == {"unreachable"}
    assert document["summary"]["ok"] == 3 and document["summary"]["unreachable"] == 2


@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_the_unknown_host_key_hint_is_in_cli_syntax(fleet, fmt):
    """An unknown host key's error suggests --host-key-policy accept-new, not the Python keyword."""
    result = fanout(*ssh_args(fleet), "-H", "127.0.0.250", "--format", fmt, "facts", "hostname")
    assert result.returncode == 3, result.stderr
    assert "UnknownHostKey:" in result.stdout and "or use --host-key-policy accept-new" in result.stdout
    assert "host_key_policy=" not in result.stdout


def test_run_over_ssh_from_a_hosts_file_with_a_range(fleet, tmp_path):
    hosts_file = tmp_path / "hosts"
    last = fleet.hosts[-1].rsplit(".", 1)[1]
    hosts_file.write_text("# the whole fleet\n127.0.0.[2-%s]\n" % last)
    result = fanout("run", "echo $((6 * 7))", "-f", str(hosts_file), *ssh_args(fleet), "-c", "2")
    assert result.returncode == 0, result.stderr
    got = records(result)
    assert sorted(got) == sorted(fleet.hosts)
    assert {r["value"]["stdout"] for r in got.values()} == {"42\n"}


def test_the_readme_demo_runs_a_real_fan_out_and_cleans_up(tmp_path):
    """scripts/demo (the README's first command, after installing) starts its own fleet, and
    leaves nothing in the temporary directory (its own, so other runs' fleets do not count)."""
    require(os.path.exists("/usr/sbin/sshd"), "OpenSSH's sshd is not installed (scripts/install installs it)")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--hosts", "3"],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 hosts in" in result.stdout and "3 ok, 0 failed, 0 timed out" in result.stdout
    assert result.stdout.count("ok  exit 0\n    agent ") == 2
    assert os.listdir(tmp_path) == []


def test_put_and_fetch_from_the_shell(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("payload\n")
    result = local("-H", "a,b", "--format", "json", "put", str(src), str(tmp_path / "{host}.copy"), "--mode", "600")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [r["value"]["remote_path"] for r in document["results"]] == [str(tmp_path / "a.copy"),
                                                                         str(tmp_path / "b.copy")]
    assert (tmp_path / "a.copy").read_text() == "payload\n" and os.stat(tmp_path / "b.copy").st_mode & 0o777 == 0o600
    result = local("-H", "a,b", "fetch", str(tmp_path / "a.copy"), str(tmp_path / "back" / "{host}"), "--make-dirs")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back" / "b").read_text() == "payload\n"
    result = local("-H", "a", "fetch", str(tmp_path / "missing"), str(tmp_path / "{host}.missing"))
    assert result.returncode == 1 and records(result)["a"]["error"].startswith("FileNotFoundError")


def test_put_if_changed_from_the_shell_says_what_it_skipped(tmp_path):
    """--if-changed: a host that already has the file is skipped (shown in JSON and in the table), exit status 0."""
    src = tmp_path / "src.txt"
    src.write_text("payload\n")
    (tmp_path / "b.copy").write_text("payload\n")
    put = ["put", str(src), str(tmp_path / "{host}.copy"), "--if-changed"]
    result = local("-H", "a,b", "--format", "jsonl", *put)
    assert result.returncode == 0, result.stderr
    assert {host: r["value"]["skipped"] for host, r in records(result).items()} == {"a": False, "b": True}
    result = local("-H", "a,b", "--format", "table", *put)
    assert result.returncode == 0, result.stderr
    heading, *rows = result.stdout.splitlines()[:3]
    assert heading.split()[-1] == "skipped" and [row.split()[-1] for row in rows] == ["true", "true"]


@pytest.mark.parametrize("argv, message", [
    (["put", "/nonexistent/file", "/tmp/x"], "cannot read /nonexistent/file: No such file or directory"),
    (["put", "/etc/hostname", "/tmp/x", "--mode", "rw"], "--mode must be octal permission bits"),
    (["fetch", "/etc/hostname", "/tmp/same-for-all"], "DST_TEMPLATE must contain {host}"),
    (["fetch", "/etc/hostname", "/tmp/{{host}}"], "DST_TEMPLATE must contain {host}"),
    (["fetch", "/etc/hostname", "/tmp/{host}/{name}"], "bad DST_TEMPLATE"),
])
def test_put_and_fetch_bad_input(argv, message):
    """A bad put or fetch argument is one line of usage error, before any host is contacted."""
    result = local("-H", "a,b", *argv)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
