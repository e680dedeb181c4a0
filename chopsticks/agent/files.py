"""The remote half of put and fetch, and what both halves share. Remote-safe: standard
library and the agent, Python 3.9.

The controller calls these on the agent (``chopsticks.transfer`` does, through ordinary
calls); the file's bytes travel beside the call on a stream (see ``agent.main.Stream``).
A file arrives through ``AtomicFile``: a temporary file next to its destination, checked
against the size and SHA-256 the controller sends at the end (``Tally``), fsynced, and only
then renamed over the destination, so a failed or interrupted transfer leaves the
destination as it was and removes its temporary file (the agent removes it too if it must
exit mid-transfer).

``AtomicFile``, ``Tally`` and ``destination`` are the controller's too (``local_files``,
``transfer``, ``sources``): this module is the one both ends already import for put and
fetch, so the one writer lives here and costs the agent no extra module.
"""

import errno
import hashlib
import os
import stat
import tempfile

from chopsticks.wire import protocol

# A new file: never one already there, never through a symlink, not inherited by children.
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
SPECIAL = "a FIFO, device or socket; only regular files, directories and symlinks are transferred"
# The directory of a destination, followed as the caller named it.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class TransferAborted(Exception):
    """The other side gave up on the transfer, or the file changed while it was read."""


def running_agent():
    from chopsticks.agent import main
    if main.AGENT is None:
        raise RuntimeError("file streams work only inside a chopsticks agent")
    return main.AGENT


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


def open_regular(path, special=OSError, follow=True):
    """A read-only fd of the regular file at ``path``, for either end's sending side. Opened
    with O_NONBLOCK, so that a FIFO never waits for a writer: a directory is refused as
    IsADirectoryError, a FIFO, device or socket as ``special`` before a byte is read. With
    ``follow`` False, a symlink at ``path`` is refused (ELOOP)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW))
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # what opening a socket gives
            raise
        raise special(errno.EINVAL, "is " + SPECIAL, path) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        if not stat.S_ISREG(mode):
            raise special(errno.EINVAL, "is " + SPECIAL, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path):
    """An fd of directory ``path``, for an ``AtomicFile`` in it."""
    return os.open(path, DIR_FLAGS)


def temp_name(name):
    """A hidden name beside ``name`` for what will be renamed over it."""
    return ".%s.%s.chopsticks-part" % (name[:200], os.urandom(6).hex())


class Tally(object):
    """The size and SHA-256 (and SHA-1, for the original's ``sha1sum``) of bytes as they pass:
    what either end checks a transfer by."""

    def __init__(self, sha1=False):
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._sha1 = hashlib.sha1() if sha1 else None

    def update(self, data):
        self.size += len(data)
        self._sha256.update(data)
        if self._sha1 is not None:
            self._sha1.update(data)

    @property
    def sha256(self):
        return self._sha256.hexdigest()

    @property
    def sha1(self):
        return self._sha1.hexdigest()

    def matches(self, size, sha256):
        return self.size == size and self.sha256 == sha256


class AtomicFile(object):
    """The one atomic file writer, on both ends: a new file under a temporary name in its
    destination's directory, renamed over the destination once complete and synced; until
    ``commit`` the destination is as it was, and ``discard`` leaves nothing behind.

    ``dir_fd`` is the destination's directory (owned: closed when done), ``name`` the
    destination's name in it, or None for a new file that is itself the result; ``label``
    names the destination (for None, its directory) in ``path`` and messages. The temporary
    file is made with ``O_EXCL | O_NOFOLLOW``, mode 0o600; names are taken relative to
    ``dir_fd``, so no symlink is followed to write it, time it or rename it.
    """

    def __init__(self, dir_fd, name, label):
        self.dir_fd = dir_fd
        self.fd = None
        self.name = name
        try:
            self.temp = temp_name(name) if name is not None else "chopsticks-" + os.urandom(6).hex()
            self.fd = os.open(self.temp, NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
        except BaseException:
            os.close(dir_fd)
            raise
        self.path = label if name is not None else os.path.join(label, self.temp)
        # where the temporary file is, by path: for an agent that must remove it on exit
        self.temp_path = os.path.join(os.path.dirname(label) if name is not None else label, self.temp)

    def write(self, data):
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, self.path) from None

    def commit(self, mode, mtime_ns=None):
        """Give the file its ``mode`` and mtime, sync it, rename it over the destination, and
        sync the directory (the new name is durable too). True if nothing was there before."""
        os.fchmod(self.fd, mode)
        if mtime_ns is not None:
            os.utime(self.fd, ns=(mtime_ns, mtime_ns))
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, self.path) from None
        os.close(self.fd)
        self.fd = None
        created = True
        if self.name is not None:
            created = not _lexists(self.name, self.dir_fd)
            os.rename(self.temp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self.temp = None
        # the file itself is synced and in place: a directory that cannot be synced (EINVAL on
        # some filesystems) does not undo a transfer that has landed
        _quietly(os.fsync, self.dir_fd)
        self.discard()
        return created

    def discard(self):
        """Close, and remove the temporary file unless it was committed. Safe to call twice,
        and from a failure's cleanup: it never raises over the error that brought it here."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            _quietly(os.close, fd)
        if self.temp is not None:
            temp, self.temp = self.temp, None
            _quietly(os.unlink, temp, dir_fd=self.dir_fd)  # may be gone already, with its directory
        if self.dir_fd is not None:
            dir_fd, self.dir_fd = self.dir_fd, None
            _quietly(os.close, dir_fd)


def _quietly(step, *args, **kwargs):
    """A cleanup step whose failure must not hide the error being cleaned up after."""
    try:
        step(*args, **kwargs)
    except OSError:
        pass


def _lexists(name, dir_fd):
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def writer_for(agent, path, make_dirs):
    """The AtomicFile of a put to ``path`` (None: a new temporary file), its temporary file
    noted for the agent to remove if it must exit first."""
    if path is None:
        writer = AtomicFile(open_dir(tempfile.gettempdir()), None, tempfile.gettempdir())
    else:
        dest = destination(path, make_dirs)
        writer = AtomicFile(open_dir(os.path.dirname(dest)), os.path.basename(dest), dest)
    agent.temp_files.add(writer.temp_path)
    return writer


def receive(sid, path=None, mode=0o644, mtime_ns=None, make_dirs=False):
    """Write stream ``sid`` to ``path`` (None: a new temporary file); return what was written."""
    agent = running_agent()
    stream = agent.open_stream(sid)
    writer = None
    try:
        writer = writer_for(agent, path, make_dirs)
        tally = Tally()
        for chunk in stream.chunks_until_end():
            writer.write(chunk)
            tally.update(chunk)
        end = stream.end
        if end.get("abort"):
            raise TransferAborted(end["abort"])
        if not tally.matches(end["size"], end["sha256"]):
            raise TransferAborted("received %d bytes with SHA-256 %s, but %d bytes with SHA-256 %s were sent"
                                  % (tally.size, tally.sha256, end["size"], end["sha256"]))
        created = writer.commit(mode, mtime_ns)
        return {"remote_path": writer.path, "size": tally.size, "sha256": tally.sha256, "created": created}
    finally:
        if writer is not None:
            writer.discard()
            agent.temp_files.discard(writer.temp_path)
        stream.close()


def same_file(path, size, sha256, mode, mtime_ns):
    """put's ``if_changed``: is the regular file at ``path`` (not a symlink) already ``size``
    bytes with SHA-256 ``sha256``? The size is compared first; the file is hashed only if it
    matches, once, in ``STREAM_CHUNK`` reads. If the content matches, the open file (the one
    that was hashed, not whatever the path names by then) is given ``mode`` and ``mtime_ns``
    where they differ, and its size and SHA-256 are returned; None where a put must send
    (nothing there, a symlink, a directory or special file, other bytes, or attributes this
    user may not set: a put replaces such a file with its own)."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        fd = open_regular(path, follow=False)
    except OSError:
        return None
    with open(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if st.st_size != size:
            return None
        tally = Tally()
        for chunk in _chunks(f):
            tally.update(chunk)
        if not tally.matches(size, sha256):
            return None
        try:
            if stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)
            if mtime_ns is not None and st.st_mtime_ns != mtime_ns:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
        except PermissionError:
            return None
    return {"remote_path": path, "size": tally.size, "sha256": tally.sha256}


def send(sid, path):
    """Send the file at ``path`` on stream ``sid``; return its size, SHA-256, mode and mtime."""
    return send_or_open(sid, path, None)


def send_or_open(sid, path, min_size):
    """``send``, but a file of ``min_size`` bytes or more (None: never) is not sent: it is kept
    open for range readers (fetch over extra sessions, ``chopsticks.bulk_fetch``) and
    ``ranges.keep_source``'s answer returned. One call either way, so a small file costs no extra
    round trip for having been a candidate."""
    stream = running_agent().open_stream(sid)
    try:
        path = os.path.abspath(os.path.expanduser(path))
        fd = open_regular(path)
        if min_size is not None and os.fstat(fd).st_size >= min_size:
            from chopsticks.agent import ranges  # imported only by a fetch over byte ranges
            return ranges.keep_source(fd, path)
        with open(fd, "rb", buffering=0) as f:
            before = os.fstat(fd)
            tally = Tally()
            for chunk in _chunks(f):
                tally.update(chunk)
                if not stream.send(chunk):
                    raise TransferAborted("the controller cancelled the transfer of %s" % path)
            after = os.fstat(fd)
        if tally.size != before.st_size or identity(after) != identity(before):
            raise TransferAborted("%s changed while it was being sent" % path)
        return {"remote_path": path, "size": tally.size, "sha256": tally.sha256,
                "mode": stat.S_IMODE(before.st_mode), "mtime_ns": before.st_mtime_ns}
    finally:
        stream.close()


def _chunks(f):
    """A file's bytes from where it is, one ``STREAM_CHUNK`` read at a time."""
    return iter(lambda: f.read(protocol.STREAM_CHUNK), b"")


def identity(st):
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
