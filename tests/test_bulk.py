"""put over extra SSH sessions (``chopsticks.bulk``): byte ranges over libssh sessions to the
fleet's real sshd, written by the real remote range writer; every guarantee of put checked by
the remote file's SHA-256, and every failure leaving the old destination and no temporary file.
"""

import dataclasses
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest
import structlog

import remote_helpers as rh
from chopsticks import (
    CallTimeout, ChopsticksError, ErrorResult, Group, HostKeyChanged, RemoteException, SSHTunnel, TransferError,
)
from chopsticks import bulk, sources
from chopsticks.transports.libssh import BulkSession
from conftest import require
from test_fanout import fanout
from fleet import PASSPHRASE
from test_files import digests, leftovers, make_file
from test_ssh import agent, home, tunnels  # noqa: F401 (fixtures)

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20
T = 1_600_000_000_123_456_789
WRITER_MARK = "def main(path, dev, ino, offset, length)"


def source_file(path, size, mode=0o640):
    """A file of ``size`` bytes with ``mode`` and an mtime of T."""
    make_file(path, size)
    os.chmod(path, mode)
    os.utime(path, ns=(T, T))
    return path


def assert_copy(result, src, dst, sessions):
    """``dst`` is ``src`` byte for byte with its mode and mtime; ``result`` says so."""
    sha1, sha256 = digests(src)
    assert digests(dst) == (sha1, sha256)
    st, st_src = os.stat(dst), os.stat(src)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (stat.S_IMODE(st_src.st_mode), st_src.st_mtime_ns)
    assert (result["sha256"], result["sha1sum"], result["size"]) == (sha256, sha1, st_src.st_size)
    assert result["remote_path"] == str(dst) and result["local_path"] == str(src)
    if sessions:
        assert result["sessions"] == sessions
    else:
        assert "sessions" not in result
    assert leftovers(os.path.dirname(dst)) == []


def writers(marker=""):
    """(pid, real uid) of each remote range writer running (not its sudo) whose argv has ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                words = f.read().decode("utf-8", "replace").split("\0")
            with open("/proc/%s/status" % entry) as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if (any(WRITER_MARK in word for word in words) and not os.path.basename(words[0]).startswith("sudo")
                and any(marker in word for word in words)):
            found.append((int(entry), uid))
    return found


@pytest.fixture(autouse=True)
def no_thread_left(monkeypatch):
    """Every session's OS thread (``bulk._start_thread``, counted as it starts and ends) has
    ended soon after its put, whatever happened to it."""
    live = []
    real = bulk._start_thread

    def run(fn, args):
        try:
            fn(*args)
        finally:
            live.remove(args[0])

    def start(fn, args):
        live.append(args[0])
        return real(run, (fn, args))

    monkeypatch.setattr(bulk, "_start_thread", start)
    yield live
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not live, "a bulk session's thread is still running: %s" % live


def ranges_of(monkeypatch, module, name):
    """The ``bulk._Range`` of every range that ``module.name`` (a range's body) is started for
    (their ``session`` once logged in)."""
    started = []
    real = getattr(module, name)

    def spy(rng, *args):
        started.append(rng)
        return real(rng, *args)

    monkeypatch.setattr(module, name, spy)
    return started


@pytest.fixture
def ranges_sent(monkeypatch):
    """The ranges a put starts."""
    return ranges_of(monkeypatch, bulk, "_send_range")


# -- 1. the file arrives whole, over N sessions or the stream --------------------------------

@pytest.mark.parametrize("sessions", [1, 2, 4])
def test_n_sessions_copy_the_file_byte_for_byte_with_mode_and_mtime(fleet, ssh_options, tunnels, tmp_path, sessions):
    """sessions=1, 2, 4 and a size not a multiple of 1 MiB: identical bytes, mode, mtime; the result says N."""
    src = source_file(tmp_path / "src", 24 * MIB + 12345)
    tunnel = tunnels(fleet.hosts[0], options=ssh_options)
    (tmp_path / "dst").write_text("old")
    sent = []
    result = tunnel.put(str(src), str(tmp_path / "dst"), sessions=sessions, progress=sent.append)
    assert_copy(result, src, tmp_path / "dst", sessions)
    assert sum(sent) == os.path.getsize(src) and len(sent) > 1


def test_file_objects_temporary_destinations_if_changed_and_trees_go_over_sessions(fleet, ssh_options, tunnels,
                                                                                   tmp_path, monkeypatch):
    """A spooled file object, a new remote temporary file, if_changed (sent, then skipped) and a tree's big file."""
    bulk_puts = []
    real = bulk.send_ranges
    monkeypatch.setattr(bulk, "send_ranges", lambda *a: bulk_puts.append(a[4]) or real(*a))
    tunnel = tunnels(fleet.hosts[3], options=ssh_options)
    src = source_file(tmp_path / "src", 12 * MIB + 1)
    with open(src, "rb") as f:
        result = tunnel.put(f, str(tmp_path / "from-object"), sessions=2)
    assert result["sessions"] == 2 and digests(tmp_path / "from-object") == digests(src)
    assert stat.S_IMODE(os.stat(tmp_path / "from-object").st_mode) == 0o644
    result = tunnel.put(str(src), sessions=2)
    try:
        assert result["sessions"] == 2 and digests(result["remote_path"]) == digests(src)
    finally:
        os.unlink(result["remote_path"])
    first = tunnel.put(str(src), str(tmp_path / "dst"), sessions=2, if_changed=True)
    again = tunnel.put(str(src), str(tmp_path / "dst"), sessions=2, if_changed=True)
    assert (first["skipped"], first["sessions"], again["skipped"]) == (False, 2, True) and "sessions" not in again
    (tmp_path / "tree").mkdir()
    shutil.copy2(src, tmp_path / "tree" / "big")
    (tmp_path / "tree" / "small").write_text("small")
    tree = tunnel.put(str(tmp_path / "tree"), str(tmp_path / "tree-copy"), sessions=2)
    assert tree["files"] == 2 and digests(tmp_path / "tree-copy" / "big") == digests(src)
    assert (tmp_path / "tree-copy" / "small").read_text() == "small" and leftovers(tmp_path / "tree-copy") == []
    assert bulk_puts == [str(tmp_path / "from-object"), None, str(tmp_path / "dst"),
                         str(tmp_path / "tree-copy" / "big")]


def test_sessions_zero_and_small_files_go_over_the_stream_and_64_mib_takes_two(fleet, ssh_options, tunnels, tmp_path,
                                                                            monkeypatch):
    """sessions=0 and a file under 8 MiB use the tunnel's stream (no bulk at all); 64 MiB by default takes 2."""
    called = []
    real = bulk.send_ranges
    monkeypatch.setattr(bulk, "send_ranges", lambda *a: called.append(a[2]) or real(*a))
    tunnel = tunnels(fleet.hosts[1], options=ssh_options)
    big = source_file(tmp_path / "big", 24 * MIB + 1)
    assert_copy(tunnel.put(str(big), str(tmp_path / "zero"), sessions=0), big, tmp_path / "zero", None)
    small = source_file(tmp_path / "small", 8 * MIB - 1)
    assert_copy(tunnel.put(str(small), str(tmp_path / "small-copy")), small, tmp_path / "small-copy", None)
    assert called == []
    huge = source_file(tmp_path / "huge", 64 * MIB)
    assert_copy(tunnel.put(str(huge), str(tmp_path / "huge-copy")), huge, tmp_path / "huge-copy", 2)
    assert called == [2]


# -- 2. the arithmetic, and bad values of sessions ---------------------------------------------

def test_session_count_follows_size_and_caps_at_one_range_per_4_mib():
    """None picks 0/1/2 by size; an explicit count is capped so that each range is at least 4 MiB, and a file
    under 4 MiB stays on the stream (a tree put with sessions= must not log in again for each small file)."""
    assert [bulk.session_count(size, None) for size in (0, 1, 8 * MIB - 1, 8 * MIB, 64 * MIB - 1, 64 * MIB)] == [
        0, 0, 0, 1, 1, 2]
    assert [bulk.session_count(size, 4) for size in (0, 1, 4 * MIB - 1, 4 * MIB, 12 * MIB - 1, 16 * MIB, 1 << 40)] == [
        0, 0, 0, 1, 2, 4, 4]
    assert bulk.session_count(1 << 30, 0) == 0 and bulk.session_count(1 << 30, 8) == 8
    assert bulk.ranges(24 * MIB + 12345, 4) == [(0, 7 * MIB), (7 * MIB, 7 * MIB), (14 * MIB, 7 * MIB),
                                                 (21 * MIB, 3 * MIB + 12345)]
    assert len(bulk.ranges(30 * MIB + 7, 8)) == 8 and len(bulk.ranges(27 * MIB, 8)) == 7  # whole-MiB steps: sessions=7


@pytest.mark.parametrize("size", [1, 4 * MIB - 1, 4 * MIB, 5 * MIB + 1, 24 * MIB + 12345, 64 * MIB, 100 * MIB + 7])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 8])
def test_ranges_cover_the_file_contiguously_in_whole_mib(size, parts):
    """Ranges are contiguous from 0 to size, at most ``parts`` of them, none empty, all but the last of one step:
    the smallest whole MiB that covers the file in ``parts`` (so 100 MiB + 7 in 16 parts is 15 ranges of 7 MiB)."""
    cut = bulk.ranges(size, parts)
    assert 1 <= len(cut) <= parts
    assert cut[0][0] == 0 and sum(length for _, length in cut) == size
    assert all(a + n == b for (a, n), (b, _) in zip(cut, cut[1:]))
    assert all(offset % MIB == 0 and length > 0 for offset, length in cut)
    step = cut[0][1] if len(cut) > 1 else MIB * -(-size // MIB)
    assert all(length == step for _, length in cut[:-1]) and 0 < cut[-1][1] <= step
    assert step % MIB == 0 and (step - MIB) * parts < size <= step * parts, "the smallest whole-MiB step"


@pytest.mark.parametrize("value, error, message", [
    (True, TypeError, "whole number or None, not True"),
    (1.5, TypeError, "whole number or None, not 1.5"),
    ("2", TypeError, "whole number or None, not '2'"),
    (-1, ValueError, "from 0 to 8, not -1"),
    (9, ValueError, "from 0 to 8, not 9"),
])
def test_bad_sessions_are_refused_before_any_host_is_contacted(fleet, ssh_options, tmp_path, value, error, message):
    """check_sessions, SSHTunnel.put and Group.put refuse a bad value with a clear error; nothing connects."""
    src = source_file(tmp_path / "src", 10)
    with pytest.raises(error, match=message):
        bulk.check_sessions(value)
    tunnel = SSHTunnel(fleet.hosts[0], options=ssh_options)
    with Group(fleet.hosts[:2], options=ssh_options) as group:
        with pytest.raises(error, match=message):
            group.put(str(src), str(tmp_path / "{host}"), sessions=value)
        with pytest.raises(error, match=message):
            tunnel.put(str(src), str(tmp_path / "one"), sessions=value)
        assert not any(t.connected for t in group) and not tunnel.connected
    assert sorted(os.listdir(tmp_path)) == ["src"]


@pytest.mark.parametrize("value", ["99", "-1"])
def test_cli_bad_sessions_is_one_line_and_exit_2(fleet, tmp_path, value):
    """fanout put --sessions 99 (or -1): one line naming --sessions, exit 2, no traceback, nothing sent."""
    src = source_file(tmp_path / "src", 10)
    result = fanout("-H", fleet.hosts[0], "-p", str(fleet.port), "-i", fleet.key, "--known-hosts", fleet.known_hosts,
                    "-F", "", "--no-agent", "put", str(src), str(tmp_path / "dst"), "--sessions", value)
    assert result.returncode == 2 and result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == "python -m chopsticks.fanout: error: --sessions: put's sessions must be from 0 to 8, not %s" % (
        value)
    assert not (tmp_path / "dst").exists()


def test_cli_put_sessions_over_the_fleet(fleet, tmp_path):
    """fanout put --sessions 2 to two SSH hosts: exit 0, each host's record says 2 sessions, the copies are right."""
    src = source_file(tmp_path / "src", 12 * MIB)
    result = fanout("-H", ",".join(fleet.hosts[:2]), "-p", str(fleet.port), "-i", fleet.key, "--known-hosts",
                    fleet.known_hosts, "-F", "", "--no-agent", "--format", "jsonl", "put", str(src),
                    str(tmp_path / "{host}"), "--sessions", "2")
    assert result.returncode == 0, result.stderr
    records = {r["host"]: r["value"] for r in map(json.loads, result.stdout.splitlines())}
    assert sorted(records) == sorted(fleet.hosts[:2])
    for host, value in records.items():
        assert value["sessions"] == 2 and digests(tmp_path / host) == digests(src)


# -- 3. many hosts ------------------------------------------------------------------------------

def test_a_group_put_hashes_the_file_once_for_four_hosts(fleet, ssh_options, tmp_path, monkeypatch, no_leaks):
    """24 MiB to 4 hosts over 2 sessions each: every copy right, and the whole-file digest reads each piece once."""
    src = source_file(tmp_path / "src", 24 * MIB)
    hashed = []
    real = sources.Source._read
    monkeypatch.setattr(sources.Source, "_read", lambda self, index: hashed.append(index) or real(self, index))
    with Group(fleet.hosts[:4], options=ssh_options) as group:
        put = group.put(str(src), str(tmp_path / "{host}"), sessions=2)
    assert put.ok, put
    for host, result in put.items():
        assert_copy(result, src, tmp_path / host, 2)
    assert sorted(hashed) == list(range(24 * MIB // sources.CHUNK)), "each piece hashed once for four hosts"


# -- 4. the tunnel's credential, replayed -------------------------------------------------------

@pytest.mark.parametrize("kind", ["ecdsa", "rsa", "passphrase"])
def test_key_file_logins_are_replayed(fleet, ssh_options, tunnels, tmp_path, kind):
    """ECDSA, RSA and a passphrase-protected ed25519 key file: the bulk session logs in with that key (no fallback)."""
    options = dataclasses.replace(ssh_options, key=fleet.keys[kind], passphrase=PASSPHRASE if kind == "passphrase"
                                  else None)
    tunnel = tunnels(fleet.hosts[1], options=options)
    tunnel.connect()
    assert tunnel.bulk_login().credential == ("key", fleet.keys[kind])
    src = source_file(tmp_path / "src", 8 * MIB)
    with structlog.testing.capture_logs() as events:
        result = tunnel.put(str(src), str(tmp_path / "dst"))
    assert_copy(result, src, tmp_path / "dst", 1)
    assert [e for e in events if e["event"] == "bulk_unavailable"] == []


def test_a_host_behind_a_jump_host_gets_no_bulk_session(fleet, ssh_options, tunnels, tmp_path, monkeypatch):
    """Through a jump host there is no bulk login: a big put goes over the tunnel's stream, whole."""
    tunnel = tunnels(fleet.hosts[2], options=dataclasses.replace(ssh_options, jump="%s:%d" % (fleet.hosts[1],
                                                                                             fleet.port)))
    tunnel.connect()
    assert tunnel.bulk_login() is None
    src = source_file(tmp_path / "src", 12 * MIB)
    assert_copy(tunnel.put(str(src), str(tmp_path / "dst"), sessions=2), src, tmp_path / "dst", None)


def test_password_login_is_replayed(fleet, ssh_options, tunnels, test_user, tmp_path):
    """A tunnel logged in by password only: the bulk sessions log in with that password; the file is the user's."""
    user, password = test_user
    options = dataclasses.replace(ssh_options, user=user, key=(), password=password)
    tunnel = tunnels(fleet.hosts[2], options=options)
    tunnel.connect()
    assert tunnel.bulk_login().credential.kind == "password"
    src = source_file(tmp_path / "src", 12 * MIB + 3)
    dst = os.path.join(pwd.getpwnam(user).pw_dir, "bulk-copy")
    try:
        assert_copy(tunnel.put(str(src), dst, sessions=2), src, dst, 2)
        assert os.stat(dst).st_uid == pwd.getpwnam(user).pw_uid
    finally:
        if os.path.exists(dst):
            os.unlink(dst)


def test_ssh_agent_login_is_replayed(fleet, ssh_options, tunnels, agent, home, tmp_path):  # noqa: F811
    """A key held only by ssh-agent: the bulk sessions log in through the agent too."""
    agent(fleet.keys["ecdsa"])
    tunnel = tunnels(fleet.hosts[3], options=dataclasses.replace(ssh_options, key=None, agent=True))
    tunnel.connect()
    assert tunnel.bulk_login().credential.kind == "agent"
    src = source_file(tmp_path / "src", 12 * MIB + 3)
    assert_copy(tunnel.put(str(src), str(tmp_path / "dst"), sessions=2), src, tmp_path / "dst", 2)


def test_a_sudo_tunnels_writers_run_as_the_agents_user(fleet, ssh_options, tunnels, tmp_path):
    """sudo='nobody': each range writer runs as nobody (not the login user) and the file is nobody's."""
    shared = tempfile.mkdtemp(prefix="chopsticks-bulk-", dir="/tmp")
    try:
        os.chmod(shared, 0o777)
        src = source_file(tmp_path / "src", 16 * MIB + 5)
        tunnel = tunnels(fleet.hosts[4], options=ssh_options, sudo="nobody")
        seen = set()
        result = tunnel.put(str(src), os.path.join(shared, "dst"), sessions=2,
                            progress=lambda _: seen.update(uid for _, uid in writers(shared)))
        assert_copy(result, src, os.path.join(shared, "dst"), 2)
        nobody = pwd.getpwnam("nobody").pw_uid
        assert seen == {nobody} and os.stat(os.path.join(shared, "dst")).st_uid == nobody
    finally:
        shutil.rmtree(shared)


# -- 5. the host key the tunnel verified, and nothing else ---------------------------------------

def _other_host_key(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    import base64
    return base64.b64decode((tmp_path / "other.pub").read_text().split()[1])


def test_a_bulk_session_refuses_a_host_key_other_than_the_tunnels(fleet, ssh_options, tunnels, tmp_path,
                                                                  monkeypatch):
    """A Login pinned to another key: BulkSession raises HostKeyChanged; a put falls back to the stream, logged."""
    tunnel = tunnels(fleet.hosts[5], options=ssh_options)
    tunnel.connect()
    login = dataclasses.replace(tunnel.bulk_login(), host_key=_other_host_key(tmp_path))
    session = BulkSession(login)
    try:
        with pytest.raises(HostKeyChanged, match="other than the one the tunnel verified"):
            session.open()
    finally:
        session.close()
    used = []
    monkeypatch.setattr(BulkSession, "run", lambda self, command: used.append(command))
    monkeypatch.setattr(BulkSession, "write", lambda self, data: used.append(data))
    monkeypatch.setattr(tunnel, "bulk_login", lambda: login)
    src = source_file(tmp_path / "src", 12 * MIB)
    with structlog.testing.capture_logs() as events:
        result = tunnel.put(str(src), str(tmp_path / "dst"), sessions=2)
    assert_copy(result, src, tmp_path / "dst", None)
    assert used == [], "nothing is sent on a session shown another host key"
    unavailable = [e for e in events if e["event"] == "bulk_unavailable"]
    assert len(unavailable) == 1 and "other than the one the tunnel verified" in unavailable[0]["reason"]


# -- 6. failures leave the old file and no temporary file -------------------------------------

@pytest.fixture
def old_dest(tmp_path):
    """A destination in a directory of its own, with old contents to be kept by a failed put."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "dst").write_text("old contents")
    return tmp_path / "d" / "dst"


def assert_untouched(dest):
    assert dest.read_text() == "old contents" and os.listdir(dest.parent) == ["dst"]


def test_a_bulk_session_killed_mid_range_fails_the_put_naming_the_range(fleet, ssh_options, tunnels, tmp_path,
                                                                       old_dest, ranges_sent):
    """The sshd serving one session is killed mid-range: TransferError naming that range; temp removed."""
    tunnel = tunnels(fleet.hosts[0], options=ssh_options)
    src = source_file(tmp_path / "src", 24 * MIB)
    killed = []

    def progress(_):
        if not killed:
            for rng in ranges_sent:
                if rng.session is not None and rng.session.control is not None and 0 < rng.sent < rng.length:
                    if fleet.kill_session_of(rng.session.control.getsockname()[1]):
                        killed.append(str(rng))
                    return

    with pytest.raises(TransferError) as info:
        tunnel.put(str(src), str(old_dest), sessions=2, progress=progress, timeout=60)
    assert len(killed) == 1
    assert "the session sending %s of %s failed" % (killed[0], src) in str(info.value), info.value
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 2) == 3


def test_a_stopped_writer_times_out_and_holds_back_only_its_host(fleet, ssh_options, tmp_path, no_leaks):
    """One host's writer SIGSTOPped, put(timeout=2): CallTimeout there, temp gone, tunnel usable; the other finishes."""
    src = source_file(tmp_path / "src", 12 * MIB)
    victim, bystander = fleet.hosts[:2]
    for host in (victim, bystander):
        (tmp_path / host).mkdir()
        (tmp_path / host / "dst").write_text("old contents")
    stopped = []

    def progress(_):
        if not stopped:
            for pid, _ in writers(str(tmp_path / victim) + "/"):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)

    try:
        with Group([victim, bystander], options=ssh_options) as group:
            put = group.put(str(src), str(tmp_path / "{host}" / "dst"), sessions=2, timeout=2, progress=progress)
            assert stopped
            assert isinstance(put[victim], ErrorResult) and isinstance(put[victim].exception, CallTimeout), put
            assert_copy(put[bystander], src, tmp_path / bystander / "dst", 2)
            assert (tmp_path / victim / "dst").read_text() == "old contents"
            assert os.listdir(tmp_path / victim) == ["dst"]
            assert group.tunnels[0].call(rh.add, 2, 2) == 4
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def test_a_put_timing_out_while_sessions_log_in_leaves_no_thread(fleet, ssh_options, tmp_path, monkeypatch,
                                                                  ranges_sent, no_thread_left):
    """Bulk logins to a port that never speaks SSH, put(timeout=1): CallTimeout, and the threads end with it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    tunnel = SSHTunnel(fleet.hosts[0], options=dataclasses.replace(ssh_options, connect_timeout=4.0))
    try:
        tunnel.connect()
        login = dataclasses.replace(tunnel.bulk_login(), address=listener.getsockname())
        monkeypatch.setattr(tunnel, "bulk_login", lambda: login)
        src = source_file(tmp_path / "src", 12 * MIB)
        with pytest.raises(CallTimeout):
            tunnel.put(str(src), str(tmp_path / "dst"), sessions=2, timeout=1)
        assert len(ranges_sent) == 2
        deadline = time.monotonic() + 2
        while no_thread_left and time.monotonic() < deadline:
            time.sleep(0.05)
        assert no_thread_left == [], "the sessions' threads outlive the put that timed out"
    finally:
        tunnel.close()
        listener.close()


def test_the_tunnel_killed_mid_range_is_a_clear_error_and_no_partial_file(fleet, ssh_options, tmp_path, old_dest,
                                                                         no_leaks):
    """The tunnel's own sshd is killed while ranges go: the put fails (its host named), no temporary file stays."""
    src = source_file(tmp_path / "src", 24 * MIB)
    tunnel = SSHTunnel(fleet.hosts[1], options=ssh_options)
    tunnel.connect()
    killed = []

    def progress(_):
        if not killed:
            killed.append(fleet.kill_session_of(tunnel._conn.pipe.link.sock.getsockname()[1]))

    try:
        with pytest.raises(ChopsticksError) as info:
            tunnel.put(str(src), str(old_dest), sessions=2, progress=progress, timeout=60)
    finally:
        tunnel.close()
    assert killed == [True]
    assert "[%s]" % fleet.hosts[1] in str(info.value), info.value
    deadline = time.monotonic() + 10
    while os.listdir(old_dest.parent) != ["dst"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_untouched(old_dest)


@pytest.mark.parametrize("change, message", [
    ("append", "changed while it was being sent"),
    ("rewrite", "changed while it was being sent"),
    ("truncate", "the local file shrank while it was being sent"),
])
def test_a_local_file_changed_while_sent_is_refused(fleet, ssh_options, tunnels, tmp_path, old_dest, change, message):
    """Appended, rewritten in place (same size) or truncated while the ranges go: TransferError, old file kept."""
    tunnel = tunnels(fleet.hosts[2], options=ssh_options)
    src = source_file(tmp_path / "src", 24 * MIB)
    changed = []

    def progress(_):
        if not changed:
            changed.append(True)
            if change == "truncate":
                os.truncate(src, 2 * MIB)
                return
            with open(src, "ab" if change == "append" else "r+b") as f:
                f.write(b"more")

    with pytest.raises(TransferError, match=message):
        tunnel.put(str(src), str(old_dest), sessions=2, progress=progress, timeout=60)
    assert_untouched(old_dest)


def test_remote_disk_full_is_one_clear_error(fleet, ssh_options, tunnels, tmp_path):
    """A 4 MiB tmpfs and a 12 MiB put over 2 sessions: one error saying no space, the old file kept, nothing else."""
    require(os.getuid() == 0 and shutil.which("mount"), "mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], capture_output=True)
    require(mounted.returncode == 0, "cannot mount a tmpfs: %s" % mounted.stderr.decode(errors="replace"))
    try:
        (small / "dst").write_text("old contents")
        src = source_file(tmp_path / "src", 12 * MIB)
        tunnel = tunnels(fleet.hosts[3], options=ssh_options)
        with pytest.raises(ChopsticksError) as info:
            tunnel.put(str(src), str(small / "dst"), sessions=2, timeout=60)
        assert "no space left on the device for %d bytes" % (12 * MIB) in str(info.value), info.value
        assert_untouched(small / "dst")
        assert tunnel.call(rh.add, 2, 2) == 4
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_missing_directory_is_the_usual_error_unless_make_dirs(fleet, ssh_options, tunnels, tmp_path):
    """No destination directory: the stream's FileNotFoundError, nothing made; with make_dirs, over 2 sessions."""
    tunnel = tunnels(fleet.hosts[4], options=ssh_options)
    src = source_file(tmp_path / "src", 12 * MIB)
    with pytest.raises(RemoteException) as info:
        tunnel.put(str(src), str(tmp_path / "a" / "b" / "dst"), sessions=2)
    assert info.value.remote_type == "builtins.FileNotFoundError"
    assert "destination's directory does not exist" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["src"]
    result = tunnel.put(str(src), str(tmp_path / "a" / "b" / "dst"), sessions=2, make_dirs=True)
    assert_copy(result, src, tmp_path / "a" / "b" / "dst", 2)


# -- 7. a hostile host (a real subprocess) -----------------------------------------------------

def hostile_tunnels(remote, fleet, ssh_options, tmp_path):
    """Makes SSHTunnels whose remote python is ``remote`` (a script here) following a script of
    the test's (``make(**script)``); yields ``make``, then closes what it made."""
    made = []

    def make(connect_timeout=10.0, **script):
        number = len(made)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / ("script-%d.json" % number)).write_text(json.dumps(script))
        wrapper = bin_dir / ("python-%d" % number)
        wrapper.write_text('#!/bin/sh\nexec %s %s %s "$@"\n' % (
            sys.executable, os.path.join(HERE, remote), bin_dir / ("script-%d.json" % number)))
        wrapper.chmod(0o755)
        options = dataclasses.replace(ssh_options, connect_timeout=connect_timeout)
        tunnel = SSHTunnel(fleet.hosts[5], options=options, python=str(wrapper))
        made.append(tunnel)
        return tunnel

    yield make
    for tunnel in made:
        tunnel.close()


@pytest.fixture
def hostile(fleet, ssh_options, tmp_path, no_leaks):
    """Makes an SSHTunnel whose remote python is hostile_bulk_remote.py following a script."""
    yield from hostile_tunnels("hostile_bulk_remote.py", fleet, ssh_options, tmp_path)


@pytest.mark.parametrize("writer, message", [
    ("count", "did not write the range: it said 'D %d " % (6 * MIB + 1)),
    ("short", "did not write the range: it said 'D %d " % (3 * MIB)),
    ("crc", "did not write the range: it said 'D %d " % (6 * MIB)),
    ("long", "said more than 512 bytes in one line"),
    ("exit-early", "the session sending bytes 6291456-12582912 of "),
    ("refuses", "the host's range writer did not start: 'E no, not today'"),
    ("escapes", r"the host's range writer did not start: 'E \x1b]0;owned\x07\x1b[2J'"),
])
def test_a_lying_range_writer_is_one_transfer_error(hostile, tmp_path, old_dest, writer, message):
    """A writer that miscounts, says a wrong CRC, says 10 KB, exits early, refuses (with terminal escapes, shown
    escaped): one TransferError, nothing left."""
    tunnel = hostile(writer=writer, at=6 * MIB)
    src = source_file(tmp_path / "src", 12 * MIB)
    started = time.monotonic()
    with pytest.raises(TransferError) as info:
        tunnel.put(str(src), str(old_dest), sessions=2, timeout=30)
    assert message in str(info.value), info.value
    assert "bytes 6291456-12582912" in str(info.value) and "\x1b" not in str(info.value)
    assert time.monotonic() - started < 20
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 1) == 2


def test_a_writer_that_never_says_ready_times_out_cleanly(hostile, tmp_path, old_dest):
    """A writer that never says R (it waits for its input to end): put(timeout=3) is a CallTimeout, nothing left."""
    tunnel = hostile(writer="silent", at=6 * MIB)
    src = source_file(tmp_path / "src", 12 * MIB)
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        tunnel.put(str(src), str(old_dest), sessions=2, timeout=3)
    assert time.monotonic() - started < 10
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 1) == 2


def test_a_writer_that_never_says_ready_and_no_put_timeout_still_ends(hostile, tmp_path, old_dest):
    """The same writer, no put timeout: the bulk session gives up after its connect timeout (2 s), saying why."""
    tunnel = hostile(connect_timeout=2.0, writer="silent", at=6 * MIB)
    src = source_file(tmp_path / "src", 12 * MIB)
    started = time.monotonic()
    with pytest.raises(TransferError, match=r"bytes 6291456-12582912 .* said nothing for 2 s"):
        tunnel.put(str(src), str(old_dest), sessions=2)
    assert time.monotonic() - started < 10
    assert_untouched(old_dest)


def test_a_writer_slow_past_the_connect_timeout_once_started_is_waited_for(hostile, tmp_path, old_dest):
    """A writer answering 3 s after its input ends, connect timeout 2 s: once it has started, a
    slow host is waited for, as the tunnel's stream waits (the put's own timeout bounds it)."""
    tunnel = hostile(connect_timeout=2.0, writer="slow", sleep=3, at=6 * MIB)
    src = source_file(tmp_path / "src", 12 * MIB)
    result = tunnel.put(str(src), str(old_dest), sessions=2)
    assert result["sessions"] == 2 and digests(old_dest) == digests(src)
    old_dest.write_text("old contents")
    with pytest.raises(CallTimeout):
        tunnel.put(str(src), str(old_dest), sessions=2, timeout=2)
    assert_untouched(old_dest)
    assert tunnel.call(rh.add, 1, 1) == 2


@pytest.mark.parametrize("answer, message", [
    (["not", "a", "dict"], "the host's account of the transfer is malformed"),
    ({"token": "TOKEN", "temp_path": "/tmp/x", "dev": "1", "ino": 1}, "the host's account of the transfer is malformed"),
    ({"token": "TOKEN", "temp_path": "/tmp/x", "dev": True, "ino": 1}, "the host's account of the transfer is malformed"),
    ({"token": "TOKEN", "temp_path": "/tmp/x\0y", "dev": 1, "ino": 1}, "temporary file for the put is malformed"),
    ({"token": "t" * 65, "temp_path": "/tmp/x", "dev": 1, "ino": 1}, "temporary file for the put is malformed"),
    ({"token": "TOKEN", "temp_path": "", "dev": 1, "ino": 1}, "temporary file for the put is malformed"),
    ({"token": "TOKEN", "temp_path": "/tmp/x", "dev": -1, "ino": 1}, "temporary file for the put is malformed"),
    ({"token": "TOKEN", "temp_path": "/tmp/x", "dev": 1, "ino": 1 << 64}, "temporary file for the put is malformed"),
    ({"token": "another", "temp_path": "/tmp/x", "dev": 1, "ino": 1}, "temporary file for the put is malformed"),
    ({"token": "TOKEN", "temp_path": "/nonexistent/x", "dev": 1, "ino": 1},
     "did not start: 'E cannot open the temporary file: No such file or directory'"),
])
def test_a_lying_open_part_is_refused(hostile, tmp_path, old_dest, answer, message):
    """open_part's answer is checked for shape and bounds before any writer starts; a missing path fails cleanly."""
    tunnel = hostile(open_part=answer)
    src = source_file(tmp_path / "src", 12 * MIB)
    with pytest.raises(TransferError, match=message.replace("(", r"\(")):
        tunnel.put(str(src), str(old_dest), sessions=2, timeout=30)
    assert_untouched(old_dest)


@pytest.mark.parametrize("answer, message", [
    ({"size": 12 * MIB + 1}, "the host's account of the file is malformed"),
    ({"size": "12"}, "the host's account of the transfer is malformed"),
    ({"remote_path": 5}, "the host's account of the transfer is malformed"),
    ("done", "the host's account of the transfer is malformed"),
])
def test_a_lying_finish_part_is_refused(hostile, tmp_path, answer, message):
    """finish_part's account is checked for shape and for the size sent: a lie is a TransferError, no temp left."""
    tunnel = hostile(finish_part=answer)
    src = source_file(tmp_path / "src", 12 * MIB)
    (tmp_path / "d").mkdir()
    with pytest.raises(TransferError, match=message):
        tunnel.put(str(src), str(tmp_path / "d" / "dst"), sessions=2, timeout=30)
    assert leftovers(tmp_path / "d") == []
