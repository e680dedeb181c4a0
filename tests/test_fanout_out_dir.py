"""``--out-dir DIR`` from the shell: each host's files as it finishes, named safely from host names
that may hold '/', '..' or ' -> ', never written outside DIR. Real CLI subprocesses over local
agents, and the SSH fleet."""

import json
import os

import pytest

from chopsticks.fanout.out_dir import file_name
from test_fanout import fanout, local, records, ssh_args
from test_fanout_output import no_traceback


def files_in(directory):
    return sorted(os.listdir(directory))


def test_run_writes_each_hosts_stdout_stderr_and_record(tmp_path):
    """run over 30 hosts: HOST.out and HOST.err hold the command's bytes (not UTF-8 too), HOST.json the rest."""
    out = tmp_path / "out"  # made by the command
    result = local("-H", "h-[1-30]", "--out-dir", str(out), "run", "printf 'caf\\351\\n'; echo oops >&2; exit 3")
    no_traceback(result)
    assert result.returncode == 1
    assert len(files_in(out)) == 90
    for n in range(1, 31):
        assert (out / ("h-%d.out" % n)).read_bytes() == b"caf\xe9\n"
        assert (out / ("h-%d.err" % n)).read_bytes() == b"oops\n"
        assert json.loads((out / ("h-%d.json" % n)).read_text()) == {
            "host": "h-%d" % n, "status": "failed", "value": {"exit_code": 3, "timed_out": False, "truncated": False}}
    assert len(records(result)) == 30  # stdout still has every record


def test_facts_and_call_write_the_record_as_json(tmp_path):
    """facts writes HOST.json, the record jsonl prints; a failed call host's has its error and traceback."""
    result = local("-H", "a,b", "--out-dir", str(tmp_path), "facts", "arch")
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path) == ["a.json", "b.json"]
    assert json.loads((tmp_path / "a.json").read_text()) == records(result)["a"]
    failed = local("-H", "a", "--out-dir", str(tmp_path), "call", "remote_helpers:raise_value_error", "boom")
    document = json.loads((tmp_path / "a.json").read_text())
    assert failed.returncode == 1 and document["error"] == "ValueError: boom" and "raise" in document["traceback"]


def test_a_run_host_that_never_ran_has_its_error_in_err_and_no_stale_out(tmp_path):
    """A host whose agent cannot start: HOST.err says why, and an HOST.out left by an earlier run is gone."""
    local("-H", "a", "--out-dir", str(tmp_path), "run", "echo earlier")
    assert (tmp_path / "a.out").read_text() == "earlier\n"
    result = local("-H", "a", "--python", "/nonexistent/python3", "--out-dir", str(tmp_path), "run", "true")
    assert result.returncode == 3  # unreachable: no agent
    assert files_in(tmp_path) == ["a.err", "a.json"]
    assert (tmp_path / "a.err").read_text() == records(result)["a"]["error"] + "\n"


# names as -H gives them (spaces separate hosts there: 'HOST -> NAME' from --container is tested below)
HOSTILE = ["../x", "a/b", "a_b", "a%2Fb", ".", "..", ".hidden", "x->y", "esc\x1bape", "東京", "/etc/passwd",
           "n" * 300]


def test_hostile_host_names_stay_inside_the_directory_each_its_own_file(tmp_path):
    """Names with '/', '..', '.', '->', escapes, CJK, a long one: 3 files each, all directly in DIR, none shared."""
    out = tmp_path / "out"
    result = local("-H", ",".join(HOSTILE), "--out-dir", str(out), "run", "echo hi")
    assert result.returncode == 0, result.stderr
    assert files_in(tmp_path) == ["out"]  # nothing beside DIR
    written = files_in(out)
    assert len(written) == 3 * len(HOSTILE)
    assert all(not name.startswith(".") and "/" not in name and len(name.encode()) <= 255 for name in written)
    for host in HOSTILE:
        assert (out / (file_name(host) + ".out")).read_text() == "hi\n"
        assert json.loads((out / (file_name(host) + ".json")).read_text())["host"] == host
    assert file_name("../x") == "%2E.%2Fx" and file_name("a/b") == "a%2Fb" and file_name("a_b") == "a_b"


def test_file_names_are_distinct_for_distinct_hosts():
    """Names that a lossy scheme would merge (a/b, a_b, a%2Fb, case, long with one end changed) stay distinct."""
    hosts = HOSTILE + ["A/b", "n" * 299 + "m", "web-1 -> app", "web-1 -> app ", "", "\udcff"]
    names = [file_name(host) for host in hosts]
    assert len(set(names)) == len(hosts)
    assert all(name not in ("", ".", "..") and "/" not in name and "\x00" not in name for name in names)


def test_a_symlink_in_the_directory_is_replaced_not_followed(tmp_path):
    """A link planted at a host's file name is replaced by the file; what it pointed to is untouched."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(target, out / "a.out")
    result = local("-H", "a", "--out-dir", str(out), "run", "echo written")
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "keep me\n"
    assert not os.path.islink(out / "a.out") and (out / "a.out").read_text() == "written\n"


def test_a_file_that_cannot_be_written_is_one_error_and_exit_1(tmp_path):
    """A directory where a host's file goes: one error line naming it, no traceback, exit 1, the run finishes."""
    (tmp_path / "a.json").mkdir()
    result = local("-H", "a", "--out-dir", str(tmp_path), "facts", "arch")
    no_traceback(result)
    assert result.returncode == 1
    assert records(result)["a"]["status"] == "ok"
    errors = [line for line in result.stderr.splitlines() if "out_dir_failed" in line]
    assert len(errors) == 1 and "cannot write %s: Is a directory" % (tmp_path / "a.json") in errors[0]


@pytest.mark.parametrize("where, message", [
    ("", "--out-dir needs a directory, got ''"),
    ("{tmp}/file", "--out-dir {tmp}/file is not a directory"),
    ("{tmp}/file/below", "--out-dir {tmp}/file/below: Not a directory"),
])
def test_bad_out_dir_input_is_one_line_and_exit_2(tmp_path, where, message):
    """An empty --out-dir, a file, or a path through a file: one line of usage error, exit 2, nothing run."""
    (tmp_path / "file").write_text("")
    result = local("-H", "a", "--out-dir", where.format(tmp=tmp_path), "run", "true")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["python -m chopsticks.fanout: error: " + message.format(tmp=tmp_path)]


def test_out_dir_over_ssh(fleet, tmp_path):
    """Over the SSH fleet, each host's output lands in DIR/ADDRESS.out."""
    result = fanout(*ssh_args(fleet), "-H", ",".join(fleet.hosts), "--out-dir", str(tmp_path), "run", "echo $((6 * 7))")
    assert result.returncode == 0, result.stderr
    for host in fleet.hosts:
        assert (tmp_path / (host + ".out")).read_text() == "42\n"
        assert (tmp_path / (host + ".err")).read_text() == ""
