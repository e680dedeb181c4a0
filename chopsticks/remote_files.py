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

from chopsticks import protocol


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


def _destination(path, make_dirs):
    dest = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(dest):
        raise IsADirectoryError(errno.EISDIR, "the destination is a directory", dest)
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        if not make_dirs:
            raise FileNotFoundError(errno.ENOENT, "the destination's directory does not exist", parent)
        os.makedirs(parent)
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
            dest = _destination(path, make_dirs)
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
        if temp != dest:
            os.rename(temp, dest)
            _fsync_dir(os.path.dirname(dest))
        agent.temp_files.discard(temp)
        return {"remote_path": dest, "size": size, "sha256": digest.hexdigest()}
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
        with open(path, "rb", buffering=0) as f:
            before = os.fstat(f.fileno())
            if not stat.S_ISREG(before.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
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
            after = os.fstat(f.fileno())
        if size != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise TransferAborted("%s changed while it was being sent" % path)
        return {"remote_path": path, "size": size, "sha256": digest.hexdigest(),
                "mode": stat.S_IMODE(before.st_mode), "mtime_ns": before.st_mtime_ns}
    finally:
        stream.close()


# -- directories ---------------------------------------------------------------------------

def kind(path):
    """'file', 'dir', 'link', 'other', or None if nothing is there."""
    try:
        st = os.lstat(os.path.expanduser(path))
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "dir" if os.path.isdir(os.path.expanduser(path)) else "link"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def list_tree(path):
    """Directory ``path`` (as ``.``) and everything under it: ``[relpath, kind, mode, mtime_ns,
    link target]`` for each entry, parents before children; symlinks are listed, not followed."""
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
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(st.st_mode):
                entries.append([rel, "link", 0, st.st_mtime_ns, os.readlink(full)])
            elif stat.S_ISDIR(st.st_mode):
                entries.append([rel, "dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, None])
            elif stat.S_ISREG(st.st_mode):
                entries.append([rel, "file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, None])
    return entries


def make_dir(path, mode=0o755, make_dirs=False):
    """Create directory ``path`` (its parents too with ``make_dirs``); fine if it exists."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        return path
    if make_dirs:
        os.makedirs(path, mode)
    else:
        os.mkdir(path, mode)
    return path


def make_link(target, path):
    """A symlink at ``path`` to ``target``, replacing a file or link already there."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    os.symlink(target, path)


def set_dir_attributes(entries):
    """``[path, mode, mtime_ns]`` for each directory, deepest first (after their contents)."""
    for path, mode, mtime_ns in entries:
        os.chmod(path, mode)
        os.utime(path, ns=(mtime_ns, mtime_ns))
