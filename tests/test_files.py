"""put and fetch: whole files, trees, groups, and every way a transfer can go wrong."""

import dataclasses
import hashlib
import io
import os
import resource
import signal
import stat
import subprocess
import sys
import time

import gevent
import pytest

import remote_helpers as rh
from chopsticks import CallTimeout, ErrorResult, Group, RemoteException, SSHTunnel, TransferError, TunnelClosed
from chopsticks import transfer
from chopsticks.wire import protocol
from chopsticks.errors import SpecialFileError
from chopsticks.tunnel import Local
from conftest import require


def make_file(path, size, seed=b"chopsticks"):
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB, not all one byte
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[:size % len(block)])
    return path


def digests(path):
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest()


def leftovers(directory):
    return [name for name in os.listdir(directory) if "chopsticks-part" in name]


# -- one tunnel ---------------------------------------------------------------------------------

def test_put_and_fetch_round_trip_keep_bytes_mode_and_mtime(local, tmp_path):
    src = make_file(tmp_path / "src.bin", 3 * transfer.CHUNK + 12345)
    os.chmod(src, 0o640)
    os.utime(src, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    sha1, sha256 = digests(src)
    result = local.put(str(src), str(tmp_path / "copy.bin"))
    assert result == {"local_path": str(src), "remote_path": str(tmp_path / "copy.bin"), "size": os.path.getsize(src),
                      "sha1sum": sha1, "sha256": sha256}
    copy = os.stat(tmp_path / "copy.bin")
    assert (copy.st_mode & 0o777, copy.st_mtime_ns) == (0o640, 1_600_000_000_123_456_789)
    back = local.fetch(str(tmp_path / "copy.bin"), str(tmp_path / "back.bin"))
    assert (back["size"], back["sha1sum"], back["sha256"]) == (os.path.getsize(src), sha1, sha256)
    assert digests(tmp_path / "back.bin") == (sha1, sha256)
    assert os.stat(tmp_path / "back.bin").st_mtime_ns == 1_600_000_000_123_456_789
    assert leftovers(tmp_path) == []


def test_empty_files_mode_override_and_replacing_a_file(local, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert local.put(str(empty), str(tmp_path / "empty-copy"))["size"] == 0
    assert (tmp_path / "empty-copy").read_bytes() == b""
    (tmp_path / "target").write_text("old")
    (tmp_path / "new").write_text("new contents")
    local.put(str(tmp_path / "new"), str(tmp_path / "target"), mode=0o600)
    assert (tmp_path / "target").read_text() == "new contents"
    assert os.stat(tmp_path / "target").st_mode & 0o777 == 0o600


def test_file_objects_and_temporary_destinations(local, tmp_path):
    """Sources and sinks may be file objects; no destination means a temporary file."""
    result = local.put(io.BytesIO(b"from memory"))
    try:
        assert result["size"] == 11 and result["local_path"] is None
        with open(result["remote_path"], "rb") as f:
            assert f.read() == b"from memory"
        assert os.stat(result["remote_path"]).st_mode & 0o777 == 0o644
        sink = io.BytesIO()
        fetched = local.fetch(result["remote_path"], sink)
        assert sink.getvalue() == b"from memory" and fetched["local_path"] is None
        temp = local.fetch(result["remote_path"])
        with open(temp["local_path"], "rb") as f:
            assert f.read() == b"from memory"
        os.unlink(temp["local_path"])
    finally:
        os.unlink(result["remote_path"])


def test_directories_copy_recursively_with_modes_links_and_mtimes(local, tmp_path):
    src = tmp_path / "tree"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    make_file(src / "sub" / "big.bin", 2 * transfer.CHUNK + 7)
    (src / "sub" / "deeper" / "x").write_text("x")
    os.symlink("top.txt", src / "link")
    os.chmod(src / "sub", 0o751)
    os.utime(src / "sub", ns=(1_500_000_000_000_000_000,) * 2)
    result = local.put(str(src), str(tmp_path / "copy"))
    assert (result["files"], result["links"], result["size"]) == (3, 1, 3 + 2 * transfer.CHUNK + 7 + 1)
    fetched = local.fetch(str(tmp_path / "copy"), str(tmp_path / "back"))
    assert fetched["files"] == 3
    for tree in ("copy", "back"):
        root = tmp_path / tree
        assert (root / "top.txt").read_text() == "top"
        assert digests(root / "sub" / "big.bin") == digests(src / "sub" / "big.bin")
        assert os.readlink(root / "link") == "top.txt"
        assert os.stat(root / "sub").st_mode & 0o777 == 0o751
        assert os.stat(root / "sub").st_mtime_ns == 1_500_000_000_000_000_000
    assert subprocess.run(["diff", "-r", str(src), str(tmp_path / "back")]).returncode == 0


def test_transfers_interleave_with_calls_on_the_same_tunnel(local, tmp_path):
    src = make_file(tmp_path / "big", 64 << 20)
    local.connect()
    started = time.monotonic()
    put = gevent.spawn(local.put, str(src), str(tmp_path / "copy"))
    gevent.sleep(0.05)
    answers = [local.call(rh.add, i, i) for i in range(20)]
    calls_done = time.monotonic() - started
    put.get(timeout=60)
    put_done = time.monotonic() - started
    assert answers == [2 * i for i in range(20)]
    assert calls_done < put_done, "the calls waited for the whole transfer"


# -- bad input and faults --------------------------------------------------------------------------

def test_missing_local_file_and_local_directory_destination(local, tmp_path):
    with pytest.raises(FileNotFoundError):
        local.put(str(tmp_path / "nope"), str(tmp_path / "x"))
    (tmp_path / "f").write_text("f")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        local.fetch(str(tmp_path / "f"), str(tmp_path / "d"))
    with pytest.raises(FileNotFoundError, match="local destination's directory does not exist"):
        local.fetch(str(tmp_path / "f"), str(tmp_path / "no" / "dir" / "f"))
    local.fetch(str(tmp_path / "f"), str(tmp_path / "no" / "dir" / "f"), make_dirs=True)
    assert (tmp_path / "no" / "dir" / "f").read_text() == "f"


def test_missing_remote_directory_is_an_error_unless_make_dirs(local, tmp_path):
    (tmp_path / "f").write_text("data")
    with pytest.raises(RemoteException) as info:
        local.put(str(tmp_path / "f"), str(tmp_path / "a" / "b" / "f"))
    assert info.value.remote_type == "builtins.FileNotFoundError"
    assert "destination's directory does not exist" in str(info.value)
    assert not (tmp_path / "a").exists()
    local.put(str(tmp_path / "f"), str(tmp_path / "a" / "b" / "f"), make_dirs=True)
    assert (tmp_path / "a" / "b" / "f").read_text() == "data"
    assert local.call(rh.add, 1, 1) == 2  # the tunnel carries on


def test_remote_destination_that_is_a_directory(local, tmp_path):
    (tmp_path / "f").write_text("data")
    (tmp_path / "dir").mkdir()
    with pytest.raises(RemoteException) as info:
        local.put(str(tmp_path / "f"), str(tmp_path / "dir"))
    assert info.value.remote_type == "builtins.IsADirectoryError"
    assert os.listdir(tmp_path / "dir") == []


def test_fetching_a_path_that_does_not_exist_leaves_nothing(local, tmp_path):
    (tmp_path / "keep").write_text("keep me")
    with pytest.raises(RemoteException) as info:
        local.fetch(str(tmp_path / "missing"), str(tmp_path / "keep"))
    assert info.value.remote_type == "builtins.FileNotFoundError"
    assert (tmp_path / "keep").read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_remote_disk_full_leaves_the_destination_as_it_was(local, tmp_path):
    require(os.getuid() == 0, "mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        (small / "dest").write_text("old contents")
        src = make_file(tmp_path / "big", 3 << 20)
        with pytest.raises(RemoteException) as info:
            local.put(str(src), str(small / "dest"))
        assert "No space left on device" in str(info.value)
        assert (small / "dest").read_text() == "old contents"
        assert os.listdir(small) == ["dest"]
        assert local.call(rh.add, 2, 2) == 4
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_a_file_that_changes_while_it_is_sent_is_refused(local, tmp_path):
    src = make_file(tmp_path / "growing", 8 << 20)
    (tmp_path / "dest").write_text("old")
    changed = []

    def progress(_):
        if not changed:
            changed.append(True)
            with open(src, "ab") as f:
                f.write(b"more")

    with pytest.raises(TransferError, match="changed while it was being sent"):
        transfer.put(local, str(src), str(tmp_path / "dest"), progress=progress)
    assert (tmp_path / "dest").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_transfer_timeout_leaves_nothing_behind(local, tmp_path):
    src = make_file(tmp_path / "big", 32 << 20)
    pid = local.connect().remote_info["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(CallTimeout):
            local.put(str(src), str(tmp_path / "dest"), timeout=1)
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while leftovers(tmp_path) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert leftovers(tmp_path) == [] and not (tmp_path / "dest").exists()
    assert local.call(rh.add, 1, 2) == 3


# -- groups ------------------------------------------------------------------------------------

def test_group_put_reads_the_file_once_and_fetch_uses_host_templates(tmp_path, no_leaks, monkeypatch):
    src = make_file(tmp_path / "src", 5 * transfer.CHUNK + 1)
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(transfer.os, "pread", lambda fd, n, at: reads.append(at) or real_pread(fd, n, at))
    with Group([Local("a"), Local("b"), Local("c")]) as group:
        group.connect()
        put = group.put(str(src), str(tmp_path / "copy-all"))
        assert put.ok and {r["sha256"] for r in put.values()} == {digests(src)[1]}
        assert len(reads) == 6, "each piece read once for three hosts"
        fetched = group.fetch(str(tmp_path / "copy-all"), str(tmp_path / "from-{host}"))
        assert [r["local_path"] for r in fetched.values()] == [str(tmp_path / ("from-" + h)) for h in "abc"]
        with pytest.raises(ValueError, match="same path"):
            group.fetch(str(src), str(tmp_path / "one-path"))
        with pytest.raises(FileNotFoundError):
            group.put(str(tmp_path / "missing"), "/tmp/x")


def test_one_stalled_host_neither_stops_the_others_nor_grows_memory(tmp_path, no_leaks):
    src = make_file(tmp_path / "src", 96 << 20)
    fast, stalled = Local("fast"), Local("stalled")
    with Group([fast, stalled]) as group:
        group.connect()
        pid = stalled.remote_info["pid"]
        os.kill(pid, signal.SIGSTOP)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            result = group.put(str(src), str(tmp_path / "copy"), timeout=4)
        finally:
            os.kill(pid, signal.SIGCONT)
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert result["fast"]["size"] == 96 << 20
    assert isinstance(result["stalled"], ErrorResult) and isinstance(result["stalled"].exception, CallTimeout)
    assert grown_mib < 40, "the controller buffered %d MiB for the stalled host" % grown_mib


# -- over SSH ------------------------------------------------------------------------------------

def test_put_and_fetch_over_ssh(fleet, ssh_options, tmp_path, no_leaks):
    src = make_file(tmp_path / "src", 9 << 20)
    with Group(fleet.hosts[:3], options=ssh_options) as group:
        put = group.put(str(src), str(tmp_path / "ssh-copy"))
        assert put.ok, put
        fetched = group.fetch(str(tmp_path / "ssh-copy"), str(tmp_path / "{host}.back"))
        assert fetched.ok, fetched
    for host in fleet.hosts[:3]:
        assert digests(tmp_path / (host + ".back")) == digests(src)


def test_permission_denied_over_ssh(fleet, ssh_options, tmp_path, test_user, no_leaks):
    user, _ = test_user
    (tmp_path / "f").write_text("secret")
    os.chmod(tmp_path, 0o755)
    with SSHTunnel(fleet.hosts[0], options=dataclasses.replace(ssh_options, user=user)) as tunnel:
        with pytest.raises(RemoteException) as info:
            tunnel.put(str(tmp_path / "f"), "/root/not-yours")
        assert info.value.remote_type == "builtins.PermissionError"
        os.chmod(tmp_path / "f", 0o600)
        with pytest.raises(RemoteException) as info:
            tunnel.fetch(str(tmp_path / "f"), str(tmp_path / "g"))
        assert info.value.remote_type == "builtins.PermissionError"
    assert not os.path.exists("/root/not-yours") and not (tmp_path / "g").exists()


def test_a_host_dying_mid_transfer_leaves_no_partial_file(fleet, ssh_options, tmp_path, no_leaks):
    src = make_file(tmp_path / "src", 64 << 20)
    os.mkdir(tmp_path / "victim")
    os.mkdir(tmp_path / "bystander")
    victim = SSHTunnel(fleet.hosts[0], options=ssh_options)
    bystander = SSHTunnel(fleet.hosts[1], options=ssh_options)
    victim.connect()
    bystander.connect()
    killed = []

    def progress(_):
        if not killed:
            killed.append(fleet.kill_session_of(victim._conn.pipe.link.sock.getsockname()[1]))

    try:
        job = gevent.spawn(transfer.put, victim, str(src), str(tmp_path / "victim" / "dest"), progress=progress,
                           sessions=0)  # the tunnel's stream (tests/test_bulk.py kills bulk sessions)
        done = bystander.put(str(src), str(tmp_path / "bystander" / "dest"))
        with pytest.raises(TunnelClosed):
            job.get(timeout=30)
    finally:
        victim.close()
        bystander.close()
    assert killed == [True]
    assert done["size"] == 64 << 20 and digests(tmp_path / "bystander" / "dest") == digests(src)
    deadline = time.monotonic() + 10
    while os.listdir(tmp_path / "victim") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(tmp_path / "victim") == [], "a partial or temporary file was left behind"


# -- modes, special files, clean-up, changes on the host ------------------------------------------

def test_fetched_modes_lose_setuid_setgid_sticky_and_obey_the_umask(local, tmp_path):
    """A real host's setuid file and 0o7777 directory arrive as plain permission bits under the umask."""
    remote = tmp_path / "remote"
    (remote / "d").mkdir(parents=True)
    (remote / "d" / "tool").write_text("#!/bin/sh\n")
    os.chmod(remote / "d" / "tool", 0o4777)
    os.chmod(remote / "d", 0o7777)
    old = os.umask(0o027)
    try:
        local.fetch(str(remote), str(tmp_path / "tree"))
        local.fetch(str(remote / "d" / "tool"), str(tmp_path / "single"))
    finally:
        os.umask(old)
    for path in (tmp_path / "tree" / "d", tmp_path / "tree" / "d" / "tool", tmp_path / "single"):
        assert os.stat(path).st_mode & 0o7777 == 0o750, path


def test_a_fetch_syncs_each_file_and_then_the_directory_that_names_it(local, tmp_path, monkeypatch):
    """The controller's fetch (one file, or a tree) fsyncs each new file, then its directory after the rename."""
    remote = tmp_path / "remote"
    (remote / "a" / "b").mkdir(parents=True)
    make_file(remote / "a" / "b" / "deep", 1000)
    make_file(remote / "top", 1000)
    (tmp_path / "single").mkdir()
    real_fsync, synced = os.fsync, []

    def fsync(fd):  # a spy in the controller's process: the agent is another process
        st = os.fstat(fd)
        synced.append((stat.S_ISDIR(st.st_mode), st.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    local.fetch(str(remote / "top"), str(tmp_path / "single" / "copy"))
    local.fetch(str(remote), str(tmp_path / "tree"))
    monkeypatch.undo()
    inode = lambda *parts: os.stat(os.path.join(tmp_path, *parts)).st_ino  # noqa: E731
    assert synced == [(False, inode("single", "copy")), (True, inode("single")),
                      (False, inode("tree", "top")), (True, inode("tree")),  # breadth first, as listed
                      (False, inode("tree", "a", "b", "deep")), (True, inode("tree", "a", "b"))]


@pytest.mark.parametrize("mode, error, message", [
    (True, TypeError, "int"), ("644", TypeError, "int"), (6.0, TypeError, "int"),
    (-1, ValueError, "0 to 0o7777"), (0o10000, ValueError, "0 to 0o7777")])
def test_put_mode_is_checked_before_anything_is_sent(local, tmp_path, mode, error, message):
    """put's mode must be an int (not bool) from 0 to 0o7777, in Tunnel.put and Group.put alike."""
    (tmp_path / "f").write_text("data")
    with pytest.raises(error, match=message):
        local.put(str(tmp_path / "f"), str(tmp_path / "copy"), mode=mode)
    with Group([Local("g")]) as group:
        with pytest.raises(error, match=message):
            group.put(str(tmp_path / "f"), str(tmp_path / "copy"), mode=mode)
    assert not (tmp_path / "copy").exists()


PUT_A_FIFO = """
import sys
from chopsticks import Group
from chopsticks.errors import SpecialFileError
from chopsticks.tunnel import Local
for put in (Local("one").put, Group([Local("two")]).put):
    try:
        put(sys.argv[1], sys.argv[2])
    except SpecialFileError as exc:
        print("refused:", exc)
"""


def test_putting_a_fifo_is_refused_without_blocking(tmp_path):
    """A FIFO with no writer is refused at once by Tunnel.put and Group.put (the hub never blocks)."""
    os.mkfifo(tmp_path / "fifo")
    done = subprocess.run([sys.executable, "-c", PUT_A_FIFO, str(tmp_path / "fifo"), str(tmp_path / "copy")],
                          capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.stdout.count("refused:") == 2 and "FIFO, device or socket" in done.stdout, done.stdout + done.stderr
    assert not (tmp_path / "copy").exists()


def test_putting_a_device_or_a_socket_is_refused(local, tmp_path):
    """A character device or a unix socket is a SpecialFileError naming it, not an empty file or ENXIO."""
    import socket
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        for special in ("/dev/null", str(tmp_path / "sock")):
            with pytest.raises(SpecialFileError, match="FIFO, device or socket") as info:
                local.put(special, str(tmp_path / "copy"))
            assert special in str(info.value)
    assert not (tmp_path / "copy").exists()


def test_special_files_in_trees_are_reported_both_ways(local, tmp_path):
    """A FIFO inside a tree being put or fetched is an error naming it, not silently skipped."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "ok").write_text("ok")
    os.mkfifo(tmp_path / "tree" / "fifo")
    with pytest.raises(SpecialFileError, match="fifo"):
        local.put(str(tmp_path / "tree"), str(tmp_path / "put"))
    assert not (tmp_path / "put").exists()
    with pytest.raises(SpecialFileError, match=r"\[local-test\].*'fifo'"):
        local.fetch(str(tmp_path / "tree"), str(tmp_path / "fetched"))
    assert not (tmp_path / "fetched").exists() or os.listdir(tmp_path / "fetched") == []


def test_fetching_a_remote_fifo_or_into_a_local_fifo_is_refused(local, tmp_path):
    """Neither side opens a FIFO: a remote one is refused at once, a local destination one is not replaced."""
    os.mkfifo(tmp_path / "remote-fifo")
    with pytest.raises(SpecialFileError, match="remote-fifo"):
        local.fetch(str(tmp_path / "remote-fifo"), str(tmp_path / "copy"), timeout=20)
    (tmp_path / "f").write_text("data")
    os.mkfifo(tmp_path / "local-fifo")
    with pytest.raises(SpecialFileError, match="local-fifo"):
        local.fetch(str(tmp_path / "f"), str(tmp_path / "local-fifo"), timeout=20)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "local-fifo").st_mode)
    assert leftovers(tmp_path) == [] and not (tmp_path / "copy").exists()


def tree_state(root):
    state = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            state[os.path.relpath(path, root)] = None if os.path.isdir(path) else open(path, "rb").read()
    return state


def test_a_failed_tree_put_removes_what_it_created_and_nothing_else(local, tmp_path):
    """When a tree put fails midway, the dirs and files it made go; what was there before stays."""
    src = tmp_path / "src"
    (src / "a" / "deep").mkdir(parents=True)
    (src / "a" / "deep" / "f").write_text("f")
    (src / "b").mkdir()
    (src / "b" / "new").write_text("new")
    (src / "m").write_text("m")
    (src / "z").write_text("cannot land: a directory is in the way")
    os.symlink("m", src / "ln")
    dst = tmp_path / "dst"
    (dst / "b").mkdir(parents=True)
    (dst / "b" / "old").write_text("was here")
    (dst / "keep").write_text("was here too")
    (dst / "z").mkdir()
    before = tree_state(dst)
    with pytest.raises(RemoteException, match="IsADirectoryError"):
        local.put(str(src), str(dst))
    assert tree_state(dst) == before


def test_a_tree_put_that_fails_removes_the_parents_it_made(local, tmp_path):
    """make_dirs parents created by a tree put that then fails (a file changed while sent) are removed."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    make_file(src / "sub" / "grows", 3 * transfer.CHUNK)
    changed = []

    def progress(_):
        if not changed:
            changed.append(True)
            with open(src / "sub" / "grows", "ab") as f:
                f.write(b"more")

    with pytest.raises(TransferError, match="changed while it was being sent"):
        transfer.put(local, str(src), str(tmp_path / "p1" / "p2" / "tree"), make_dirs=True, progress=progress)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_a_remote_file_that_changes_during_fetch_is_a_transfer_error(local, tmp_path):
    """A host's file that grows while it is sent fails the fetch with TransferError; nothing lands here."""
    remote = make_file(tmp_path / "remote", 3 * protocol.STREAM_WINDOW)
    (tmp_path / "dest").write_text("old")
    changed = []

    def progress(_):  # the host is still reading: it cannot be more than a window ahead
        if not changed:
            changed.append(True)
            with open(remote, "ab") as f:
                f.write(b"more")

    with pytest.raises(TransferError, match=r"\[local-test\] .*remote changed while it was being sent"):
        local.fetch(str(remote), str(tmp_path / "dest"), progress=progress, timeout=60)
    assert (tmp_path / "dest").read_text() == "old" and leftovers(tmp_path) == []
