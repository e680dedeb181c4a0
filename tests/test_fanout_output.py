"""What ``python -m chopsticks.fanout`` prints, whatever the hosts return: strict JSON, tables and
output lines that a host cannot use against the terminal, a quiet end when the reader goes away.
Real CLI subprocesses over real local agents, and a hostile agent where a host's value is crafted."""

import json
import math
import os
import subprocess
import sys

import pytest

from test_fanout import HERE, ROOT, local

BIG = math.factorial(2000)


def strict(text):
    """JSON as a strict reader takes it: NaN, Infinity and -Infinity are errors."""
    def refuse(token):
        raise ValueError("not strict JSON: %s" % token)
    return json.loads(text, parse_constant=refuse)


def hostile(tmp_path, scenario):
    """The --python of a local host that answers every call with the crafted value of ``scenario``."""
    wrapper = tmp_path / ("python-" + scenario)
    wrapper.write_text("#!/bin/sh\nPYTHONPATH=%s exec %s %s %s\n" % (
        ROOT, sys.executable, os.path.join(HERE, "cli_hostile_agent.py"), scenario))
    wrapper.chmod(0o755)
    return ["--python", str(wrapper)]


def no_traceback(result):
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


# -- JSON: always valid, one documented encoding per type ----------------------------------------

EXPECTED = {
    "big": hex(BIG),
    "small": -12345678901234567890,
    "floats": ["NaN", "Infinity", "-Infinity", 0.5],
    "decimal": "1.10",
    "datetime": "2026-12-03T10:00:00.000500+01:00",
    "date": "2026-12-03",
    "time": "23:59:01",
    "timedelta": 86401.5,
    "bytes": "hi\\xff\x00",
    "text": "caf\xe9 \\xff",
    "complex": "(1-2j)",
    "set": ["a", "b", "c"],
    "frozenset": [1, 2, 3],
    "tuple": [1, "two"],
    "uuid": "12345678-1234-5678-1234-567812345678",
    "keys": {"1": "int", "null": "none", "[1, 2]": "tuple", "2.5": "float", "false": "bool"},
}


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_every_result_type_prints_as_strict_json_in_its_documented_encoding(fmt):
    """Big ints, NaN/inf, Decimal, datetimes, bytes, complex, sets, odd keys: strict JSON, as documented."""
    result = local("-H", "a", "--format", fmt, "call", "cli_values:odd_values")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    document = strict(result.stdout)
    entry = document if fmt == "jsonl" else document["results"][0]
    assert entry["value"] == EXPECTED
    assert int(entry["value"]["big"], 16) == BIG


@pytest.mark.parametrize("fmt", ["jsonl", "json", "table"])
def test_an_int_past_pythons_4300_digit_limit_prints_in_every_format(fmt):
    """call math:factorial 2000 (5,736 digits) prints (in hexadecimal) in every format, exit 0."""
    result = local("-H", "a", "--format", fmt, "call", "math:factorial", "--json-args", "[2000]")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    if fmt == "table":
        assert "a     ok      0x" in result.stdout
    else:
        document = strict(result.stdout)
        assert (document if fmt == "jsonl" else document["results"][0])["value"] == hex(BIG)


def test_the_table_shows_every_type_without_a_traceback():
    """The table format shows the same odd values (as compact JSON), exit 0."""
    result = local("-H", "a", "--format", "table", "call", "cli_values:odd_values")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    assert '"floats": ["NaN", "Infinity", "-Infinity", 0.5]' in result.stdout


def test_a_value_nested_too_deep_to_show_fails_that_host_only():
    """A 150-level list fails its host with a one-line reason; the other host's value prints."""
    deep = local("-H", "a", "call", "cli_values:nested", "--json-args", "[150]")
    no_traceback(deep)
    assert deep.returncode == 1
    entry = strict(deep.stdout.splitlines()[0])
    assert entry["status"] == "failed" and "nested more than 100 levels" in entry["error"]
    shallow = local("-H", "a", "call", "cli_values:nested", "--json-args", "[50]")
    assert shallow.returncode == 0 and strict(shallow.stdout)["status"] == "ok"


@pytest.mark.parametrize("scenario", ["a_list", "run_dict_of_wrong_types"])
@pytest.mark.parametrize("fmt", ["jsonl", "table"])
def test_a_run_host_returning_something_else_is_a_failed_host(tmp_path, scenario, fmt):
    """A hostile host answering run with a list or a dict of wrong types: failed, said why, exit 1."""
    result = local("-H", "evil", *hostile(tmp_path, scenario), "--format", fmt, "run", "true")
    no_traceback(result)
    assert result.returncode == 1
    assert "run returns a dict of exit_code, stdout, stderr, timed_out, this host sent" in result.stdout
    if fmt == "jsonl":
        assert strict(result.stdout)["status"] == "failed"


def test_hostile_facts_show_in_a_table_with_control_characters_escaped(tmp_path):
    """Facts of the wrong shapes (huge ints, NaN, escape sequences) make a table; nothing raw reaches it."""
    result = local("-H", "evil", *hostile(tmp_path, "odd_facts"), "--format", "table", "facts")
    no_traceback(result)
    assert result.returncode == 0, result.stderr
    row = result.stdout.splitlines()[1]
    assert "web\\x1b[2J\\x1b]0;owned\\x07" in row and "1.2.3.4\\r\\x9b31m" in row and "-Infinity" in row
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in result.stdout.replace("\n", ""))


# -- a terminal: control characters are shown, never obeyed ---------------------------------------

FORGED = "done\r[other-host] forged line\x1b[31m red\x9b2J\x07"
SHOWN = "done\\r[other-host] forged line\\x1b[31m red\\x9b2J\\x07"


def raw_controls(text):
    return [c for c in text.replace("\n", "") if (ord(c) < 0x20 and c != "\t") or 0x7f <= ord(c) < 0xa0]


def test_remote_output_and_host_names_are_escaped_in_console_logs():
    """A remote's stderr line and a host name with \\r and escape sequences print as visible escapes."""
    result = local("-H", "host\x1bc", "--format", "jsonl", "call", "cli_values:shout", FORGED)
    assert result.returncode == 0, result.stderr
    assert "host=host\\x1bc line=%r" % FORGED in result.stderr  # spaces make it a repr, itself escaped
    spaceless = local("-H", "a", "call", "cli_values:shout", "\x1b[2J\x1b]0;title\x07")
    assert "line=\\x1b[2J\\x1b]0;title\\x07" in spaceless.stderr
    assert raw_controls(result.stderr + spaceless.stderr) == [], result.stderr + spaceless.stderr
    assert strict(result.stdout)["value"] == FORGED  # JSON escapes it itself, unchanged


def test_remote_output_is_escaped_without_structlog_too():
    """The library's own '[host] line' on stderr (no structlog configured) escapes them as well."""
    script = ("import cli_values; from chopsticks.tunnel import Local\n"
              "with Local('host\\x1bc') as t:\n    t.call(cli_values.shout, %r)\n" % FORGED)
    result = subprocess.run([sys.executable, "-c", script], cwd=HERE, env=dict(os.environ, PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "[host\\x1bc] " + SHOWN in result.stderr
    assert raw_controls(result.stderr) == [], result.stderr


def test_table_cells_errors_and_run_output_are_escaped():
    """Table cells, a failed host's error, and run's output lines show control characters as escapes."""
    value = local("-H", "host\x1bc", "--format", "table", "call", "cli_values:shout", FORGED)
    assert SHOWN in value.stdout and "host\\x1bc" in value.stdout
    error = local("-H", "a", "--format", "table", "call", "cli_values:fail", FORGED)
    assert "ValueError: " + SHOWN in error.stdout
    run = local("-H", "a", "--format", "table", "run", "printf 'out\\r\\033[2Jx\\n'; printf 'err\\033]0;t\\007' >&2")
    assert "    out\\r\\x1b[2Jx" in run.stdout and "  ! err\\x1b]0;t\\x07" in run.stdout
    for result in (value, error, run):
        assert raw_controls(result.stdout) == [], result.stdout


# -- the reader goes away: | head -1 ------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "json", "table"])
def test_a_closed_pipe_on_stdout_ends_quietly_with_status_141(tmp_path, fmt):
    """Output to a reader that has gone (| head -1): exit 141, no traceback, no 'Exception ignored'."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    proc = subprocess.Popen([sys.executable, "-m", "chopsticks.fanout", "--transport", "local", "-H", "a",
                             "--format", fmt, "run", "cat %s" % gate], cwd=HERE,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdout.close()  # the reader is gone before anything is printed
        with open(gate, "w"):  # the host's command finishes only now (EOF on the FIFO)
            pass
        _, errors = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 141, errors
    assert b"Traceback" not in errors and b"Exception ignored" not in errors and b"Broken pipe" not in errors
