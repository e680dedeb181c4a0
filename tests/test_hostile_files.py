"""A hostile host cannot make a fetch touch anything outside its destination, nor grant privileges.

The hostile host is a real subprocess: the real agent, with its tree listing and its account
of each file scripted by the test (``hostile_files_remote.py``). Real files in ``tmp_path``
are snapshotted before and after: nothing outside the destination may be created, written,
unlinked, chmodded or have its times set.
"""

import hashlib
import json
import os
import stat
import sys

import pytest

from chopsticks import TransferError
from chopsticks.errors import SpecialFileError
from chopsticks.tunnel import Local

HERE = os.path.dirname(os.path.abspath(__file__))
T = 1_600_000_000_000_000_000


@pytest.fixture
def world(tmp_path):
    """``outside`` (a dir with a precious file), an empty ``dest`` to fetch into, ``remote``
    (a real dir with a payload file the hostile host sends), and a snapshot of all but dest."""
    class World:
        outside = tmp_path / "outside"
        dest = tmp_path / "work" / "dest"
        remote = tmp_path / "remote"
        bin = tmp_path / "bin"

        def snapshot(self):
            seen = {}
            mine = (str(self.dest), str(self.bin))  # the fetch's own, and the hostile host's scripts
            for top, dirs, files in os.walk(tmp_path):
                if any(top == path or top.startswith(path + os.sep) for path in mine):
                    continue
                for name in dirs + files:
                    path = os.path.join(top, name)
                    if path in mine:
                        continue
                    st = os.lstat(path)
                    content = None
                    if stat.S_ISREG(st.st_mode):
                        with open(path, "rb") as f:
                            content = hashlib.sha256(f.read()).hexdigest()
                    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
                    seen[path] = (st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, content, link)
            return seen

    w = World()
    for directory in (w.outside, w.dest, w.remote, w.bin):
        directory.mkdir(parents=True)
    (w.outside / "victim").write_text("precious")
    os.chmod(w.outside, 0o755)
    (w.remote / "payload").write_bytes(b"bytes from a hostile host")
    return w


@pytest.fixture
def evil(world, no_leaks):
    """Makes a tunnel to a hostile host that follows a script (see hostile_files_remote.py)."""
    tunnels = []

    def make(**script):
        number = len(tunnels)
        script.setdefault("payload", str(world.remote / "payload"))
        (world.bin / ("script-%d.json" % number)).write_text(json.dumps(script))
        wrapper = world.bin / ("python-%d" % number)
        wrapper.write_text('#!/bin/sh\nexec %s %s %s "$@"\n' % (
            sys.executable, os.path.join(HERE, "hostile_files_remote.py"), world.bin / ("script-%d.json" % number)))
        wrapper.chmod(0o755)
        tunnel = Local("evil-%d" % number, python=str(wrapper))
        tunnels.append(tunnel)
        return tunnel

    yield make
    for tunnel in tunnels:
        tunnel.close()


def root(mode=0o755):
    return [".", "dir", mode, T, None]


def escapes(world):
    """Listings that try to reach outside the destination, each with what the refusal says."""
    outside, victim = str(world.outside), str(world.outside / "victim")
    return {
        "dotdot file": ([root(), ["a", "dir", 0o755, T, None], ["a/../../x", "file", 0o644, T, None]], "'\\.\\.'"),
        "dotdot over a victim": ([root(), ["a", "dir", 0o755, T, None],
                                  ["a/../../../outside/victim", "file", 0o644, T, None]], "'\\.\\.'"),
        "absolute name": ([root(), ["a", "dir", 0o755, T, None], [outside + "/new", "file", 0o644, T, None]],
                          "absolute"),
        "file beneath a link": ([root(), ["ln", "link", 0, T, outside], ["ln/new", "file", 0o644, T, None]],
                                "not a directory listed before it"),
        "link over a victim via dotdot": ([root(), ["a", "dir", 0o755, T, None],
                                           ["a/../../../outside/victim", "link", 0, T, "/etc/passwd"]], "'\\.\\.'"),
        "dir over a link, mode 777": ([root(), ["ln", "link", 0, T, outside], ["ln", "dir", 0o777, T, None]],
                                      "twice"),
        "file beneath a file": ([root(), ["f", "file", 0o644, T, None], ["f/g", "file", 0o644, T, None]],
                                "not a directory listed before it"),
        "dot component": ([root(), ["a", "dir", 0o755, T, None], ["a/./x", "file", 0o644, T, None]], "'\\.'"),
        "empty component": ([root(), ["a", "dir", 0o755, T, None], ["a//x", "file", 0o644, T, None]], "empty"),
        "NUL": ([root(), ["a", "dir", 0o755, T, None], ["a/x\0y", "file", 0o644, T, None]], "NUL"),
        "victim path as a link": ([root(), ["a", "dir", 0o755, T, None], [victim, "link", 0, T, "/etc/passwd"]],
                                  "absolute"),
    }


@pytest.mark.parametrize("case", ["dotdot file", "dotdot over a victim", "absolute name", "file beneath a link",
                                  "link over a victim via dotdot", "dir over a link, mode 777", "file beneath a file",
                                  "dot component", "empty component", "NUL", "victim path as a link"])
def test_a_listing_that_escapes_is_refused_whole(evil, world, case):
    """A name with '..', '.', empty or NUL parts, absolute, or beneath a link or file: refused, nothing written."""
    entries, message = escapes(world)[case]
    before = world.snapshot()
    with pytest.raises(TransferError, match=message) as info:
        evil(entries=entries).fetch(str(world.remote), str(world.dest), timeout=60)
    assert "[evil-0]" in str(info.value)
    assert world.snapshot() == before, "something outside the destination changed"
    assert os.listdir(world.dest) == [], "a refused listing still wrote something"


@pytest.mark.parametrize("entry, message", [
    (["x", "bogus", 0o644, T, None], "malformed"),
    (["x", "file", -1, T, None], "mode"),
    (["x", "dir", 0o10000, T, None], "mode"),
    (["x", "file", "644", T, None], "mode"),
    (["x", "file", True, T, None], "mode"),
    (["x", "file", 0o644, 1 << 64, None], "mtime"),
    (["x", "link", 0, T, None], "malformed"),
    (["x", "link", 0, T, 42], "malformed"),
    (["x", "file", 0o644, T, "/etc/passwd"], "malformed"),
    (["x", "file", 0o644, T], "malformed"),
    ("x", "malformed"),
])
def test_malformed_entries_are_refused(evil, world, entry, message):
    """Entries of the wrong shape, kind, mode, mtime or link target are refused before anything is written."""
    before = world.snapshot()
    with pytest.raises(TransferError, match=message):
        evil(entries=[root(), ["a", "dir", 0o755, T, None], entry]).fetch(str(world.remote), str(world.dest),
                                                                          timeout=60)
    assert world.snapshot() == before
    assert os.listdir(world.dest) == []


def test_a_local_symlink_in_the_destination_is_never_followed(evil, world):
    """A symlink already in the destination, named as a remote dir, is neither written beneath nor chmodded."""
    os.symlink(str(world.outside), world.dest / "ln")
    before = world.snapshot()
    entries = [root(), ["ln", "dir", 0o777, T, None], ["ln/new", "file", 0o644, T, None]]
    with pytest.raises(TransferError, match="'ln' is a symlink or not a directory"):
        evil(entries=entries).fetch(str(world.remote), str(world.dest), timeout=60)
    assert world.snapshot() == before
    assert os.listdir(world.dest) == ["ln"] and os.readlink(world.dest / "ln") == str(world.outside)


def test_a_symlink_entry_replaces_only_what_is_inside(evil, world):
    """A link entry over a local file in the destination replaces the file there, not its target."""
    os.symlink(str(world.outside / "victim"), world.dest / "to-victim")
    before = world.snapshot()
    entries = [root(), ["to-victim", "link", 0, T, "/etc/passwd"], ["f", "file", 0o644, T, None]]
    evil(entries=entries).fetch(str(world.remote), str(world.dest), timeout=60)
    assert world.snapshot() == before
    assert os.readlink(world.dest / "to-victim") == "/etc/passwd"
    assert (world.dest / "f").read_bytes() == b"bytes from a hostile host"


def test_a_listed_special_file_is_reported(evil, world):
    """A FIFO, device or socket listed by the host is reported (SpecialFileError), nothing written."""
    with pytest.raises(SpecialFileError, match="'fifo'"):
        evil(entries=[root(), ["fifo", "special", 0o644, T, None]]).fetch(str(world.remote), str(world.dest),
                                                                          timeout=60)
    assert os.listdir(world.dest) == []


def test_modes_from_a_host_are_never_privileges(evil, world):
    """setuid, setgid and sticky bits are dropped and the controller's umask masks group/other bits."""
    entries = [root(0o7777), ["d", "dir", 0o7777, T, None], ["d/f", "file", 0o6777, T, None]]
    old = os.umask(0o027)
    try:
        evil(entries=entries, send_mode=0o6777).fetch(str(world.remote), str(world.dest), timeout=60)
    finally:
        os.umask(old)
    for path, mode in ((world.dest, 0o750), (world.dest / "d", 0o750), (world.dest / "d" / "f", 0o750)):
        assert stat.S_IMODE(os.lstat(path).st_mode) == mode, path


def test_a_file_account_with_a_bad_mode_is_refused(evil, world):
    """A single-file fetch whose host reports a mode beyond 0o7777 fails and leaves nothing behind."""
    with pytest.raises(TransferError, match="mode"):
        evil(send_mode=0o100000).fetch(str(world.remote / "payload"), str(world.dest / "f"), timeout=60)
    assert os.listdir(world.dest) == []


# -- put's if_changed: the host's answer about the file already there ------------------------

def _account_of(path, **changes):
    data = path.read_bytes()
    return dict({"remote_path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, **changes)


MALFORMED_ANSWERS = {
    "a string": lambda src: "yes",
    "True": lambda src: True,
    "a list": lambda src: [1, 2],
    "an empty dict": lambda src: {},
    "a string size": lambda src: _account_of(src, size="25"),
    "a bool size": lambda src: _account_of(src, size=True),
    "another size": lambda src: _account_of(src, size=1),
    "other bytes": lambda src: _account_of(src, sha256="0" * 64),
    "no path": lambda src: {"size": 25, "sha256": _account_of(src)["sha256"]},
}


@pytest.mark.parametrize("answer", sorted(MALFORMED_ANSWERS))
def test_a_malformed_answer_to_if_changed_is_one_clear_error(evil, world, answer):
    """An answer that is not None nor an account of exactly the file's size and digest: TransferError, nothing sent."""
    src = world.remote / "payload"
    before = world.snapshot()
    with pytest.raises(TransferError, match=r"\[evil-0\] the host's account .* is malformed"):
        evil(same_file=MALFORMED_ANSWERS[answer](src)).put(str(src), str(world.dest / "f"), if_changed=True,
                                                           timeout=60)
    assert world.snapshot() == before and os.listdir(world.dest) == []


def test_a_lying_answer_to_if_changed_can_only_skip_or_send(evil, world):
    """A false "it is there" (naming a victim) skips, touching nothing; a false "it is not" sends the file."""
    src = world.remote / "payload"
    before = world.snapshot()
    lie = _account_of(src, remote_path=str(world.outside / "victim"))
    result = evil(same_file=lie).put(str(src), str(world.dest / "f"), if_changed=True, timeout=60)
    assert result["skipped"] is True and world.snapshot() == before and os.listdir(world.dest) == []
    result = evil(same_file=None).put(str(src), str(world.dest / "f"), if_changed=True, timeout=60)
    assert result["skipped"] is False and (world.dest / "f").read_bytes() == src.read_bytes()
    assert world.snapshot() == before
