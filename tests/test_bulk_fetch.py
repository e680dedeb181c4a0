"""fetch over extra SSH sessions (``chopsticks.bulk_fetch``): byte ranges read by the real remote
range reader over libssh sessions to the fleet's real sshd, written at their offsets into the
controller's one temporary file; every copy checked by SHA-256 (of random bytes, so a range
written at the wrong offset shows), every failure leaving the old destination and no
temporary file.
"""

import dataclasses
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import time

import pytest
import structlog

import remote_helpers as rh
from chopsticks import CallTimeout, ErrorResult, Group, SSHTunnel, TransferError
from chopsticks import bulk_fetch
from test_bulk import assert_untouched, hostile_tunnels, no_thread_left, old_dest, ranges_of  # noqa: F401
from test_fanout import fanout
from test_files import leftovers
from test_ssh import tunnels  # noqa: F401 (fixtures)

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20
T = 1_600_000_000_123_456_789


def random_file(path, size, mode=0o640):
    """``size`` random bytes (no repeating pattern: a misplaced range changes the digest), mode, mtime T."""
    with open(path, "wb") as f:
        left = size
        while left:
            f.write(os.urandom(min(left, 4 * MIB)))
            left -= min(left, 4 * MIB)
    os.chmod(path, mode)
    os.utime(path, ns=(T, T))
    return str(path)


def digests(path):
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            sha1.update(block)
            sha256.update(block)
    return sha1.hexdigest(), sha256.hexdigest()


def assert_fetched(result, src, dst, sessions):
    """``dst`` is ``src`` byte for byte with its mtime and (umask-masked) mode; ``result`` says so."""
    sha1, sha256 = digests(src)
    assert digests(dst) == (sha1, sha256)
    st, st_src = os.stat(dst), os.stat(src)
    assert st.st_mtime_ns == st_src.st_mtime_ns and stat.S_IMODE(st.st_mode) == stat.S_IMODE(st_src.st_mode) & ~0o022
    assert (result["sha256"], result["sha1sum"], result["size"]) == (sha256, sha1, st_src.st_size)
    assert result["remote_path"] == str(src) and result["local_path"] == str(dst)
    if sessions:
        assert result["sessions"] == sessions
    else:
        assert "sessions" not in result
    assert leftovers(os.path.dirname(dst)) == []


@pytest.fixture(autouse=True)
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(autouse=True)
def threads_end(no_thread_left):  # noqa: F811
    """Every range's thread has ended soon after its fetch (``test_bulk.no_thread_left``)."""
    return no_thread_left


# -- 1. the file arrives whole -----------------------------------------------------------------

@pytest.mark.parametrize("sessions", [1, 2, 4])
def test_n_sessions_fetch_the_file_byte_for_byte_with_mode_and_mtime(fleet, ssh_options, tunnels, tmp_path,
                                                                     sessions):
    """sessions=1, 2, 4 and a size not a multiple of 1 MiB: identical bytes, mtime, masked mode; result says N."""
    src = random_file(tmp_path / "src", 24 * MIB + 12345)
    tunnel = tunnels(fleet.hosts[0], options=ssh_options)
    (tmp_path / "dst").write_text("old")
    got = []
    result = tunnel.fetch(src, str(tmp_path / "dst"), sessions=sessions, progress=got.append)
    assert_fetched(result, src, tmp_path / "dst", sessions)
    assert sum(got) == os.path.getsize(src) and len(got) > 1


def test_defaults_zero_small_files_and_file_objects_use_the_stream(fleet, ssh_options, tunnels, tmp_path,
                                                                    monkeypatch):
    """None: under 8 MiB the stream, from 8 MiB one session, from 64 MiB two; 0 and a file object: the stream."""
    called = []
    real = bulk_fetch.receive_ranges
    monkeypatch.setattr(bulk_fetch, "receive_ranges", lambda *a: called.append(a[2]["size"]) or real(*a))
    tunnel = tunnels(fleet.hosts[1], options=ssh_options)
    small = random_file(tmp_path / "small", 8 * MIB - 1)
    assert_fetched(tunnel.fetch(small, str(tmp_path / "small-copy")), small, tmp_path / "small-copy", None)
    tiny = random_file(tmp_path / "tiny", 4 * MIB - 1)
    assert_fetched(tunnel.fetch(tiny, str(tmp_path / "tiny-copy"), sessions=4), tiny, tmp_path / "tiny-copy", None)
    big = random_file(tmp_path / "big", 8 * MIB)
    assert_fetched(tunnel.fetch(big, str(tmp_path / "zero"), sessions=0), big, tmp_path / "zero", None)
    with open(tmp_path / "object", "wb") as f:
        result = tunnel.fetch(big, f, sessions=2)
    assert "sessions" not in result and digests(tmp_path / "object") == digests(big)
    assert called == []
    assert_fetched(tunnel.fetch(big, str(tmp_path / "one")), big, tmp_path / "one", 1)
    huge = random_file(tmp_path / "huge", 64 * MIB)
    assert_fetched(tunnel.fetch(huge, str(tmp_path / "two")), huge, tmp_path / "two", 2)
    assert called == [8 * MIB, 64 * MIB]
    temp = tunnel.fetch(big, sessions=2)  # a new local temporary file
    try:
        assert temp["sessions"] == 2 and digests(temp["local_path"]) == digests(big)
    finally:
        os.unlink(temp["local_path"])


def test_group_fetch_with_host_template_and_a_trees_big_file(fleet, ssh_options, tmp_path, no_leaks):
    """Group.fetch to '{host}' over 2 sessions each, and a tree whose big file comes over sessions."""
    src = random_file(tmp_path / "src", 12 * MIB + 7)
    with Group(fleet.hosts[:3], options=ssh_options) as group:
        fetched = group.fetch(src, str(tmp_path / "{host}"), sessions=2)
        assert fetched.ok, fetched
        for host, result in fetched.items():
            assert_fetched(result, src, tmp_path / host, 2)
        (tmp_path / "tree" / "sub").mkdir(parents=True)
        big = random_file(tmp_path / "tree" / "sub" / "big", 9 * MIB + 3)
        (tmp_path / "tree" / "small").write_text("small")
        tree = group.tunnels[0].fetch(str(tmp_path / "tree"), str(tmp_path / "tree-copy"), sessions=2)
    assert tree["files"] == 2 and tree["size"] == 9 * MIB + 8
    assert digests(tmp_path / "tree-copy" / "sub" / "big") == digests(big)
    assert (tmp_path / "tree-copy" / "small").read_text() == "small"
    assert leftovers(tmp_path / "tree-copy" / "sub") == [] and leftovers(tmp_path / "tree-copy") == []


def test_cli_fetch_sessions(fleet, tmp_path):
    """fanout fetch --sessions 2: each host's copy right; --sessions 99 is one usage line, exit 2."""
    src = random_file(tmp_path / "src", 9 * MIB)
    common = ["-H", ",".join(fleet.hosts[:2]), "-p", str(fleet.port), "-i", fleet.key, "--known-hosts",
              fleet.known_hosts, "-F", "", "--no-agent", "--format", "jsonl"]
    result = fanout(*common, "fetch", src, str(tmp_path / "{host}"), "--sessions", "2")
    assert result.returncode == 0, result.stderr
    records = {r["host"]: r["value"] for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(records) == sorted(fleet.hosts[:2])
    for host in records:
        assert digests(tmp_path / host) == digests(src)
    bad = fanout(*common, "fetch", src, str(tmp_path / "x-{host}"), "--sessions", "99")
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert bad.stderr.splitlines() == [
        "python -m chopsticks.fanout: error: --sessions: fetch's sessions must be from 0 to 8, not 99"]


@pytest.mark.parametrize("value, error, message", [
    (True, TypeError, "fetch's sessions must be a whole number or None, not True"),
    ("2", TypeError, "whole number or None, not '2'"),
    (-1, ValueError, "fetch's sessions must be from 0 to 8, not -1"),
    (9, ValueError, "from 0 to 8, not 9"),
])
def test_bad_sessions_are_refused_before_any_host_is_contacted(fleet, ssh_options, tmp_path, value, error, message):
    """SSHTunnel.fetch, Group.fetch and iter_fetch refuse a bad value; nothing connects, nothing is written."""
    tunnel = SSHTunnel(fleet.hosts[0], options=ssh_options)
    with Group(fleet.hosts[:2], options=ssh_options) as group:
        with pytest.raises(error, match=message):
            group.fetch("/etc/hostname", str(tmp_path / "{host}"), sessions=value)
        with pytest.raises(error, match=message):
            group.iter_fetch("/etc/hostname", str(tmp_path / "{host}"), sessions=value)
        with pytest.raises(error, match=message):
            tunnel.fetch("/etc/hostname", str(tmp_path / "one"), sessions=value)
        assert not any(t.connected for t in group) and not tunnel.connected
    assert os.listdir(tmp_path) == []


# -- 2. failures leave the old file and no temporary file ---------------------------------------

@pytest.fixture
def ranges_read(monkeypatch):
    """The ranges a fetch starts."""
    return ranges_of(monkeypatch, bulk_fetch, "_receive_range")


def test_a_remote_file_appended_to_while_read_is_refused(fleet, ssh_options, tunnels, tmp_path, old_dest):
    """Another process appends to the remote file while the ranges come: TransferError, old file kept, no temp."""
    src = random_file(tmp_path / "src", 24 * MIB)
    tunnel = tunnels(fleet.hosts[2], options=ssh_options)
    appended = []

    def progress(_):
        if not appended:
            appended.append(subprocess.run(["sh", "-c", "printf more >> '%s'" % src]).returncode)

    with pytest.raises(TransferError, match="the remote file changed while it was being sent"):
        tunnel.fetch(src, str(old_dest), sessions=2, progress=progress, timeout=60)
    assert appended == [0]
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 2) == 3


def test_a_session_killed_mid_range_fails_the_fetch_naming_the_range(fleet, ssh_options, tunnels, tmp_path,
                                                                     old_dest, ranges_read):
    """The sshd serving one session is killed mid-range: TransferError naming that range; temp removed."""
    src = random_file(tmp_path / "src", 24 * MIB)
    tunnel = tunnels(fleet.hosts[0], options=ssh_options)
    killed = []

    def progress(_):
        if not killed:
            for rng in ranges_read:
                if rng.session is not None and rng.session.control is not None and 0 < rng.sent < rng.length:
                    if fleet.kill_session_of(rng.session.control.getsockname()[1]):
                        killed.append(str(rng))
                    return

    with pytest.raises(TransferError) as info:
        tunnel.fetch(src, str(old_dest), sessions=2, progress=progress, timeout=60)
    assert len(killed) == 1
    assert "the session reading %s of %s failed" % (killed[0], src) in str(info.value), info.value
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 2) == 3


def test_a_stopped_session_times_out_and_holds_back_only_its_host(fleet, ssh_options, tmp_path, ranges_read,
                                                                   no_leaks):
    """The sshd serving one of one host's sessions SIGSTOPped mid-range, Group.fetch(timeout=2): CallTimeout
    there, nothing left, its tunnel still answers; the other host's copy is right."""
    src = random_file(tmp_path / "src", 24 * MIB)
    victim, bystander = fleet.hosts[:2]
    for host in (victim, bystander):
        (tmp_path / host).mkdir()
        (tmp_path / host / "dst").write_text("old contents")
    stopped = []

    def progress(_):
        if not stopped:
            for rng in ranges_read:
                session = rng.session
                if (session is not None and session.login.name == victim and session.control is not None
                        and 0 < rng.sent < rng.length):
                    for pid in fleet.sessions_of(session.control.getsockname()[1]):
                        os.kill(pid, signal.SIGSTOP)
                        stopped.append(pid)
                    return

    try:
        with Group([victim, bystander], options=ssh_options) as group:
            fetched = group.fetch(src, str(tmp_path / "{host}" / "dst"), sessions=2, timeout=2, progress=progress)
            assert stopped
            assert isinstance(fetched[victim], ErrorResult) and isinstance(fetched[victim].exception, CallTimeout)
            assert_fetched(fetched[bystander], src, tmp_path / bystander / "dst", 2)
            assert (tmp_path / victim / "dst").read_text() == "old contents"
            assert os.listdir(tmp_path / victim) == ["dst"]
            assert group.tunnels[0].call(rh.add, 2, 2) == 4
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_a_session_that_cannot_log_in_falls_back_to_the_stream(fleet, ssh_options, tunnels, tmp_path, monkeypatch):
    """A Login pinned to another host key: nothing read on a session; the whole file over the stream, logged."""
    from test_bulk import _other_host_key
    tunnel = tunnels(fleet.hosts[5], options=ssh_options)
    tunnel.connect()
    login = dataclasses.replace(tunnel.bulk_login(), host_key=_other_host_key(tmp_path))
    monkeypatch.setattr(tunnel, "bulk_login", lambda: login)
    src = random_file(tmp_path / "src", 12 * MIB + 1)
    with structlog.testing.capture_logs() as events:
        result = tunnel.fetch(src, str(tmp_path / "dst"), sessions=2)
    assert_fetched(result, src, tmp_path / "dst", None)
    unavailable = [e for e in events if e["event"] == "bulk_unavailable"]
    assert len(unavailable) == 1 and "other than the one the tunnel verified" in unavailable[0]["reason"]


def test_a_fetch_timing_out_while_sessions_log_in_leaves_no_thread(fleet, ssh_options, tmp_path, monkeypatch,
                                                                    ranges_read, threads_end, old_dest):
    """Bulk logins to a port that never speaks SSH, fetch(timeout=1): CallTimeout, the threads end, nothing left."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    tunnel = SSHTunnel(fleet.hosts[0], options=dataclasses.replace(ssh_options, connect_timeout=4.0))
    try:
        tunnel.connect()
        login = dataclasses.replace(tunnel.bulk_login(), address=listener.getsockname())
        monkeypatch.setattr(tunnel, "bulk_login", lambda: login)
        src = random_file(tmp_path / "src", 12 * MIB)
        with pytest.raises(CallTimeout):
            tunnel.fetch(src, str(old_dest), sessions=2, timeout=1)
        assert len(ranges_read) == 2
        deadline = time.monotonic() + 2
        while threads_end and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threads_end == [], "the sessions' threads outlive the fetch that timed out"
        assert_untouched(old_dest)
        assert tunnel.call(rh.add, 1, 1) == 2
    finally:
        tunnel.close()
        listener.close()


# -- 3. a hostile host (a real subprocess) -----------------------------------------------------

@pytest.fixture
def hostile(fleet, ssh_options, tmp_path, no_leaks):
    """Makes an SSHTunnel whose remote python is hostile_fetch_remote.py following a script."""
    yield from hostile_tunnels("hostile_fetch_remote.py", fleet, ssh_options, tmp_path)


@pytest.mark.parametrize("reader, message", [
    ("short", "the host's range reader sent %d of its %d bytes" % (3 * MIB + 11, 6 * MIB)),
    ("long", "the host's range reader did not send the range: it said 'xxxxxxxxxx"),
    ("crc", "the host's range reader did not send the range: it said 'D "),
    ("overlong", "said more than 512 bytes in one line"),
    ("exit-early", "the host's range reader sent 1000 of its %d bytes" % (6 * MIB)),
])
def test_a_lying_range_reader_is_one_transfer_error(hostile, tmp_path, old_dest, reader, message):
    """A reader that sends half its range, more than it, a wrong CRC, a 10 KB trailer, or exits early: one
    TransferError naming the range, the old local file kept, no temporary file."""
    tunnel = hostile(reader=reader, at=6 * MIB)
    src = random_file(tmp_path / "src", 12 * MIB)
    started = time.monotonic()
    with pytest.raises(TransferError) as info:
        tunnel.fetch(src, str(old_dest), sessions=2, timeout=30)
    assert message in str(info.value), info.value
    assert "the session reading bytes 6291456-12582912 of %s failed" % src in str(info.value), info.value
    assert time.monotonic() - started < 20
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 1) == 2


@pytest.mark.parametrize("answer, message", [
    (["not", "a", "dict"], "the host's account of the transfer is malformed"),
    ({"token": None}, "the host's account of the transfer is malformed"),
    ({"size": "12"}, "the host's account of the transfer is malformed"),
    ({"size": True}, "the host's account of the transfer is malformed"),
    ({"size": -1}, "the host's account of the file to fetch is malformed"),
    ({"size": (1 << 63) + 1}, "the host's account of the file to fetch is malformed"),
    ({"token": "t" * 65}, "the host's account of the file to fetch is malformed"),
    ({"remote_path": "/tmp/x\0y"}, "the host's account of the file to fetch is malformed"),
    ({"ino": 1 << 64}, "the host's account of the file to fetch is malformed"),
    ({"mode": 0o104755}, "not permission bits and nanoseconds"),
    ({"mtime_ns": 1 << 64}, "not permission bits and nanoseconds"),
    ({"size": 13 * MIB}, "the host's range reader sent %d of its %d bytes: it said 'the file ended after"
     % (5 * MIB, 6 * MIB)),
    ({"ino": 1}, "the host's range reader did not start: 'E the file is not the one the agent opened'"),
])
def test_a_lying_open_source_is_refused(hostile, tmp_path, old_dest, answer, message):
    """send_or_open's answer is checked for shape and bounds before any reader starts (a size, mode, mtime,
    token, path or inode out of bounds); a size the file does not have or an inode it is not fails cleanly."""
    tunnel = hostile(open_source=answer)
    src = random_file(tmp_path / "src", 12 * MIB)
    with pytest.raises(TransferError) as info:
        tunnel.fetch(src, str(old_dest), sessions=2, timeout=30)
    assert message in str(info.value), info.value
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 1) == 2


def test_the_range_reader_is_standard_library_python_3_9():
    """RANGE_READER parses as Python 3.9 and imports only the standard library's os, stat, sys and zlib."""
    import ast
    from chopsticks.agent import ranges
    tree = ast.parse(ranges.RANGE_READER, feature_version=(3, 9))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported == {"os", "stat", "sys", "zlib"}
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
