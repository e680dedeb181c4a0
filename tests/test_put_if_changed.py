"""put's ``if_changed``: a file the remote already has (same size and SHA-256) is not sent,
only given the put's mode and mtime; the result says it was skipped. Against real agents
(Local tunnels) writing real files."""

import dataclasses
import io
import os
import pwd
import shutil
import stat
import tempfile

from chopsticks import Group, SSHTunnel, transfer
from chopsticks.tunnel import Local
from test_files import digests, leftovers, make_file

T = 1_600_000_000_123_456_789


def test_a_file_already_there_is_skipped_and_one_that_differs_is_sent(local, tmp_path):
    """A second put sends nothing and leaves the remote file in place; other bytes of the same size are sent."""
    src, dst = make_file(tmp_path / "src", 3 * transfer.CHUNK + 5), tmp_path / "dst"
    first = local.put(str(src), str(dst), if_changed=True)
    assert first["skipped"] is False and digests(dst) == digests(src)
    inode, sent = os.stat(dst).st_ino, []
    again = local.put(str(src), str(dst), if_changed=True, progress=sent.append)
    assert again == dict(first, skipped=True) and sent == [] and os.stat(dst).st_ino == inode
    with open(dst, "r+b") as f:
        f.seek(transfer.CHUNK)
        f.write(b"X")
    third = local.put(str(src), str(dst), if_changed=True, progress=sent.append)
    assert third["skipped"] is False and sum(sent) == os.path.getsize(src) and digests(dst) == digests(src)
    assert leftovers(tmp_path) == []


def test_matching_bytes_get_the_mode_and_mtime_without_being_sent(local, tmp_path):
    """Same bytes, other mode and mtime: the remote file is chmodded and timed in place (as rsync --checksum -t)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for path, mode, mtime in ((src, 0o640, T), (dst, 0o600, 1_500_000_000_000_000_000)):
        path.write_bytes(b"same bytes")
        os.chmod(path, mode)
        os.utime(path, ns=(mtime, mtime))
    inode, sent = os.stat(dst).st_ino, []
    assert local.put(str(src), str(dst), if_changed=True, progress=sent.append)["skipped"] is True
    st = os.stat(dst)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_ino, sent) == (0o640, T, inode, [])
    assert local.put(str(src), str(dst), 0o604, if_changed=True)["skipped"] is True
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o604


def test_a_symlink_at_the_destination_is_replaced_not_compared(local, tmp_path):
    """A symlink to identical bytes is not taken as the file: the put sends, the link's target stays as it was."""
    src, target, dst = tmp_path / "src", tmp_path / "target", tmp_path / "dst"
    for path in (src, target):
        path.write_bytes(b"same bytes")
    os.chmod(target, 0o600)
    os.symlink(target, dst)
    assert local.put(str(src), str(dst), if_changed=True)["skipped"] is False
    assert not os.path.islink(dst) and dst.read_bytes() == b"same bytes"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_a_tree_skips_its_unchanged_files_and_leaves_files_only_on_the_remote(local, tmp_path):
    """Per file: unchanged ones skipped, a changed one sent, one only on the remote left alone; counts in the result."""
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_text("a")
    (src / "sub" / "b").write_text("b")
    make_file(src / "sub" / "big", 2 * transfer.CHUNK + 3)
    os.symlink("a", src / "link")
    first = local.put(str(src), str(tmp_path / "copy"), if_changed=True)
    assert (first["files"], first["skipped"], first["links"]) == (3, 0, 1)
    (tmp_path / "copy" / "sub" / "b").write_text("B")
    (tmp_path / "copy" / "extra").write_text("mine")
    sent = []
    again = local.put(str(src), str(tmp_path / "copy"), if_changed=True, progress=sent.append)
    assert (again["files"], again["skipped"], again["size"]) == (3, 2, first["size"]) and sum(sent) == 1
    assert (tmp_path / "copy" / "sub" / "b").read_text() == "b" and (tmp_path / "copy" / "extra").read_text() == "mine"
    assert "skipped" not in local.put(str(src), str(tmp_path / "copy"))


def test_file_objects_compare_and_temporary_destinations_always_send(local, tmp_path):
    """A file object is spooled and compared like a file; with no remote path a new temporary file is sent each time."""
    dst = tmp_path / "dst"
    assert local.put(io.BytesIO(b"spooled"), str(dst), if_changed=True)["skipped"] is False
    assert local.put(io.BytesIO(b"spooled"), str(dst), if_changed=True)["skipped"] is True
    made = [local.put(io.BytesIO(b"spooled"), if_changed=True) for _ in range(2)]
    try:
        assert [r["skipped"] for r in made] == [False, False] and made[0]["remote_path"] != made[1]["remote_path"]
    finally:
        for result in made:
            os.unlink(result["remote_path"])


def test_a_group_hashes_the_file_once_and_skips_only_the_hosts_that_have_it(tmp_path, no_leaks, monkeypatch):
    """Three hosts, one already with the file: each piece is read once in all (digest and sends), that host skipped."""
    src = make_file(tmp_path / "src", 5 * transfer.CHUNK + 1)
    (tmp_path / "copy-b").write_bytes(src.read_bytes())
    os.utime(tmp_path / "copy-b", ns=(os.stat(src).st_mtime_ns,) * 2)
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(transfer.os, "pread", lambda fd, n, at: reads.append(at) or real_pread(fd, n, at))
    with Group([Local("a"), Local("b"), Local("c")]) as group:
        put = group.put(str(src), str(tmp_path / "copy-{host}"), if_changed=True)
    assert put.ok and {host: r["skipped"] for host, r in put.items()} == {"a": False, "b": True, "c": False}
    assert sorted(reads) == [i * transfer.CHUNK for i in range(6)], "each piece read once for three hosts"
    assert all(digests(tmp_path / ("copy-" + h)) == digests(src) for h in "abc")


def test_a_fleet_skips_on_the_second_put(fleet, ssh_options, tmp_path, no_leaks):
    """Over SSH, three hosts: the first put sends to each, the second sends nothing and says so."""
    src = make_file(tmp_path / "src", 2 * transfer.CHUNK + 9)
    with Group(fleet.hosts[:3], options=ssh_options) as group:
        first = group.put(str(src), str(tmp_path / "{host}.copy"), if_changed=True)
        again = group.put(str(src), str(tmp_path / "{host}.copy"), if_changed=True)
    assert first.ok and again.ok, (first, again)
    assert [r["skipped"] for r in first.values()] == [False] * 3 and [r["skipped"] for r in again.values()] == [True] * 3


def test_a_file_this_user_may_not_chmod_is_replaced_not_skipped(fleet, ssh_options, tmp_path, test_user, no_leaks):
    """Same bytes in another user's file whose mode differs: the put cannot fix it in place, so it sends and replaces it."""
    user, _ = test_user
    home = pwd.getpwnam(user).pw_dir
    shared = tempfile.mkdtemp(dir=home)
    try:
        os.chmod(shared, 0o777)
        theirs = os.path.join(shared, "f")
        with open(theirs, "w") as f:
            f.write("same bytes")
        os.chmod(theirs, 0o644)
        (tmp_path / "src").write_text("same bytes")
        with SSHTunnel(fleet.hosts[0], options=dataclasses.replace(ssh_options, user=user)) as tunnel:
            result = tunnel.put(str(tmp_path / "src"), theirs, 0o664, if_changed=True)
        st = os.stat(theirs)
        assert result["skipped"] is False and (st.st_uid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam(user).pw_uid,
                                                                                        0o664)
    finally:
        shutil.rmtree(shared)
