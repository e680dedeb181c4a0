"""The remote half of put and fetch. Remote-safe: standard library and the agent, Python 3.9.

The controller calls these on the agent (``chopsticks.transfer`` does, through ordinary
calls); the file's bytes travel beside the call on a stream (see ``agent.main.Stream``).
A file arrives in a temporary file next to its destination, is checked against the size and
SHA-256 the controller sends at the end, fsynced, and only then renamed over the
destination, so a failed or interrupted transfer leaves the destination as it was and
removes its temporary file (the agent removes it too if it must exit mid-transfer).
"""

import errno
import hashlib
import os
import stat
import tempfile

from chopsticks.wire import protocol


class TransferAborted(Exception):
    """The other side gave up on the transfer, or the file changed while it was read."""


def _agent():
    from chopsticks.agent import main
    if main.AGENT is None:
        raise RuntimeError("file streams work only inside a chopsticks agent")
    return main.AGENT


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def destination(path, make_dirs, label="the destination"):
    """The absolute path of a file about to be written: not a directory, in a directory that
    exists (made with ``make_dirs``). The controller checks its own destinations with it too."""
    dest = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(dest):
        raise IsADirectoryError(errno.EISDIR, label + " is a directory", dest)
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        if not make_dirs:
            raise FileNotFoundError(errno.ENOENT, label + "'s directory does not exist", parent)
        os.makedirs(parent, exist_ok=True)
    return dest


def receive(sid, path=None, mode=0o644, mtime_ns=None, make_dirs=False):
    """Write stream ``sid`` to ``path`` (None: a new temporary file); return what was written."""
    agent = _agent()
    stream = agent.open_stream(sid)
    fd = temp = None
    try:
        if path is None:
            fd, temp = tempfile.mkstemp(prefix="chopsticks-")
            dest = temp
        else:
            dest = destination(path, make_dirs)
            fd, temp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix="." + os.path.basename(dest) + ".",
                                        suffix=".chopsticks-part")
        agent.temp_files.add(temp)
        digest = hashlib.sha256()
        size = 0
        for chunk in stream.chunks_until_end():
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(fd, view):]
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, dest) from None
            digest.update(chunk)
            size += len(chunk)
        end = stream.end
        if end.get("abort"):
            raise TransferAborted(end["abort"])
        if size != end["size"] or digest.hexdigest() != end["sha256"]:
            raise TransferAborted("received %d bytes with SHA-256 %s, but %d bytes with SHA-256 %s were sent"
                                  % (size, digest.hexdigest(), end["size"], end["sha256"]))
        os.fchmod(fd, mode)
        if mtime_ns is not None:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        try:
            os.fsync(fd)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, dest) from None
        os.close(fd)
        fd = None
        created = temp == dest or not os.path.lexists(dest)
        if temp != dest:
            os.rename(temp, dest)
            _fsync_dir(os.path.dirname(dest))
        agent.temp_files.discard(temp)
        return {"remote_path": dest, "size": size, "sha256": digest.hexdigest(), "created": created}
    except BaseException:
        if fd is not None:
            os.close(fd)
        if temp is not None:
            try:
                os.unlink(temp)
            except OSError:
                pass
            agent.temp_files.discard(temp)
        raise
    finally:
        stream.close()


def send(sid, path):
    """Send the file at ``path`` on stream ``sid``; return its size, SHA-256, mode and mtime."""
    stream = _agent().open_stream(sid)
    try:
        path = os.path.abspath(os.path.expanduser(path))
        # O_NONBLOCK: opening a FIFO must not wait for a writer; only a regular file is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb", buffering=0) as f:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or socket)", path)
            digest = hashlib.sha256()
            size = 0
            while True:
                chunk = f.read(protocol.STREAM_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                size += len(chunk)
                if not stream.send(chunk):
                    raise TransferAborted("the controller cancelled the transfer of %s" % path)
            after = os.fstat(fd)
        if size != before.st_size or _identity(after) != _identity(before):
            raise TransferAborted("%s changed while it was being sent" % path)
        return {"remote_path": path, "size": size, "sha256": digest.hexdigest(),
                "mode": stat.S_IMODE(before.st_mode), "mtime_ns": before.st_mtime_ns}
    finally:
        stream.close()


def _identity(st):
    """What changes when a file is written, truncated or replaced in place."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


# -- directories ---------------------------------------------------------------------------

def kind(path):
    """'file', 'dir', 'link', 'special' (a FIFO, device or socket), or None if nothing is there."""
    try:
        st = os.lstat(os.path.expanduser(path))
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "dir" if os.path.isdir(os.path.expanduser(path)) else "link"
    return _KINDS.get(stat.S_IFMT(st.st_mode), "special")


_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link"}


def list_tree(path):
    """Directory ``path`` (as ``.``) and everything under it: ``[relpath, kind, mode, mtime_ns,
    link target]`` for each entry, parents before children; symlinks are listed, not followed,
    and FIFOs, devices and sockets are listed as 'special' (not hidden: the caller refuses them)."""
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", root)
    st = os.stat(root)
    entries = [[".", "dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, None]]

    def fail(exc):
        raise exc

    for top, dirs, files in os.walk(root, onerror=fail):
        dirs.sort()
        for name in dirs + sorted(files):
            full = os.path.join(top, name)
            st = os.lstat(full)
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special")
            link = os.readlink(full) if kind == "link" else None
            entries.append([os.path.relpath(full, root), kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns, link])
    return entries


def make_dir(path, mode=0o755, make_dirs=False):
    """Create directory ``path`` (its parents too with ``make_dirs``); fine if it exists.
    Returns ``[path, the directories it created, outermost first]``."""
    path = os.path.abspath(os.path.expanduser(path))
    missing = []
    probe = path
    while not os.path.isdir(probe) and (make_dirs or not missing):
        missing.insert(0, probe)
        probe = os.path.dirname(probe)
    for directory in missing:
        os.mkdir(directory, mode)
    return [path, missing]


def make_link(target, path):
    """A symlink at ``path`` to ``target``, replacing a file or link already there; True if
    nothing was there before."""
    path = os.path.abspath(os.path.expanduser(path))
    existed = os.path.lexists(path)
    if existed and not os.path.isdir(path):
        os.unlink(path)
    os.symlink(target, path)
    return not existed


def set_dir_attributes(entries):
    """``[path, mode, mtime_ns]`` for each directory, deepest first (after their contents)."""
    for path, mode, mtime_ns in entries:
        os.chmod(path, mode)
        os.utime(path, ns=(mtime_ns, mtime_ns))


def remove_created(entries):
    """Undo a failed tree put: ``[path, is_dir]`` of what it created, newest first. Directories
    are removed only if empty (what someone else put there stays); returns what is left."""
    left = []
    for path, is_dir in entries:
        try:
            if is_dir:
                os.rmdir(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            left.append([path, exc.strerror])
    return left
