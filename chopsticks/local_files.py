"""Where fetched files land on the controller: written relative to directory fds. Controller-side.

The controller does not trust a remote, nor its listing of a tree. ``check_listing`` refuses a
listing whole, before anything is written, unless every entry is well formed and stays inside
the tree: a relative name without empty, ``.`` or ``..`` components or NUL, listed once,
beneath a directory listed before it (never beneath a symlink or a file). ``TreeWriter`` then
walks from the destination's directory fd one component at a time with ``O_NOFOLLOW``, so no
symlink (the remote's, or one already here) is ever followed to create, write, chmod or set
times. A remote's mode is data, not a privilege: only its permission bits are applied, masked
by the controller's umask (never setuid, setgid or sticky).

``AtomicFile`` is the one atomic writer of both ends (``agent.files``) with the controller's
rules on top: a new file under a temporary name in its destination's directory (by fd),
renamed over the destination once complete and synced, then the directory synced.
"""

import contextlib
import errno
import os
import stat
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

from chopsticks.agent import files  # the agent half of put/fetch, and the one atomic writer both ends use
from chopsticks.errors import RemoteException, SpecialFileError, TransferError

KINDS = ("dir", "file", "link", "special")  # what the agent's files.list_tree lists
MAX_MODE = 0o7777
MTIME_NS = (-(1 << 63), (1 << 63) - 1)  # what utimensat takes
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SPECIAL = files.SPECIAL
# How the agent says a file changed while it read it.
ABORTED = "%s.%s" % (files.TransferAborted.__module__, files.TransferAborted.__qualname__)


@contextlib.contextmanager
def unchanged_remote(host: str) -> Iterator[None]:
    """The agent's "the file changed while I read it" (a fetch's) as a TransferError."""
    try:
        yield
    except RemoteException as exc:
        if exc.remote_type != ABORTED:
            raise
        raise TransferError("[%s] %s; the local file was left as it was" % (host, exc.remote_message)) from exc


def umask() -> int:
    """The controller's umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o077)  # set and restored with no greenlet switch in between
    os.umask(old)
    return old


def local_mode(mode: int, mask: int) -> int:
    """A remote's mode as the controller applies it: permission bits only, masked by the umask."""
    return mode & 0o777 & ~mask


def _int_in(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def checked_account(host: str, value: Any, fields: Dict[str, type]) -> Dict[str, Any]:
    """A host's account of a transfer, checked for shape (the host is not trusted): a dict with
    each of ``fields`` of exactly its type."""
    if not isinstance(value, dict) or any(type(value.get(name)) is not kind for name, kind in fields.items()):
        raise TransferError("[%s] the host's account of the transfer is malformed: %s" % (host, repr(value)[:200]))
    return value


def check_attributes(host: str, name: str, mode: Any, mtime_ns: Any) -> None:
    """Refuse a mode that is not permission bits or an mtime that is not int64 nanoseconds."""
    if not _int_in(mode, 0, MAX_MODE) or not _int_in(mtime_ns, *MTIME_NS):
        raise TransferError("[%s] the host gave %r the mode %r and mtime %r: not permission bits and nanoseconds"
                            % (host, name, mode, mtime_ns))


class Entry(NamedTuple):
    """One checked entry of a remote tree: ``parts`` of its relative name (``()`` for the root)."""
    parts: Tuple[str, ...]
    kind: str
    mode: int
    mtime_ns: int
    link: Optional[str]

    @property
    def name(self) -> str:
        return "/".join(self.parts) or "."


def _entry(host: str, item: Any, first: bool) -> Entry:
    if not isinstance(item, (list, tuple)) or len(item) != 5:
        raise TransferError("[%s] the host listed a malformed entry: %s" % (host, repr(item)[:200]))
    rel, kind, mode, mtime_ns, link = item
    if (not isinstance(rel, str) or not isinstance(kind, str) or kind not in KINDS
            or (kind == "link") != isinstance(link, str) or (kind != "link" and link is not None)
            or (isinstance(link, str) and (not link or "\0" in link))):
        raise TransferError("[%s] the host listed a malformed entry: %s" % (host, repr(item)[:200]))
    check_attributes(host, rel, mode, mtime_ns)
    if first:
        if rel != "." or kind != "dir":
            raise TransferError("[%s] the host's listing does not begin with the directory itself: %r" % (host, rel))
        return Entry((), kind, mode, mtime_ns, None)
    parts = tuple(rel.split("/"))
    if "\0" in rel or any(part in ("", ".", "..") for part in parts):
        raise TransferError("[%s] the host listed %r: absolute, empty, '.' or '..' components and NUL are refused "
                            "(a name must stay inside the directory); nothing was written" % (host, rel))
    return Entry(parts, kind, mode, mtime_ns, link)


def check_listing(host: str, listing: Any) -> List[Entry]:
    """The remote's listing of a tree, each entry checked, or TransferError naming the entry."""
    if not isinstance(listing, list) or not listing:
        raise TransferError("[%s] the host's listing of the tree is malformed: %s" % (host, repr(listing)[:200]))
    kinds: Dict[Tuple[str, ...], str] = {}
    entries: List[Entry] = []
    for item in listing:
        entry = _entry(host, item, first=not entries)
        if entry.parts in kinds:
            raise TransferError("[%s] the host listed %r twice; nothing was written" % (host, entry.name))
        if entries and kinds.get(entry.parts[:-1]) != "dir":
            raise TransferError("[%s] the host listed %r, but %r is not a directory listed before it; nothing is "
                                "written beneath a symlink or a file" % (host, entry.name, "/".join(entry.parts[:-1])))
        if entry.kind == "special":
            raise SpecialFileError("[%s] the host listed %r, %s" % (host, entry.name, SPECIAL))
        kinds[entry.parts] = entry.kind
        entries.append(entry)
    return entries


def _check_replaceable(dir_fd: int, name: str, label: str) -> None:
    """What is at ``name`` may be replaced by a new file or link: nothing, a file or a symlink."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a directory is in the way", label)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise SpecialFileError(errno.EINVAL, "the local destination is " + SPECIAL, label)


class AtomicFile(files.AtomicFile):
    """The one atomic writer (``agent.files.AtomicFile``) under the controller's rules: it
    replaces only a file or a symlink (never a directory, FIFO or device), and a remote's mode
    is data: only its permission bits are applied, masked by the umask ``mask``."""

    def __init__(self, dir_fd: int, name: Optional[str], label: str, mask: int):
        self.mask = mask
        if name is not None:
            try:
                _check_replaceable(dir_fd, name, label)
            except BaseException:
                os.close(dir_fd)
                raise
        super().__init__(dir_fd, name, label)

    def commit(self, mode: int, mtime_ns: Optional[int] = None) -> bool:
        return super().commit(local_mode(mode, self.mask), mtime_ns)


def file_at(path: Optional[str], make_dirs: bool) -> AtomicFile:
    """The atomic writer for a fetch to local ``path`` (None: a new file in the temporary directory)."""
    if path is None:
        import tempfile
        parent = tempfile.gettempdir()
        return AtomicFile(files.open_dir(parent), None, parent, umask())
    path = files.destination(path, make_dirs, "the local destination")
    # The directory the caller named is followed as given; the file's own name never is.
    return AtomicFile(files.open_dir(os.path.dirname(path)), os.path.basename(path), path, umask())


class TreeWriter:
    """Writes the checked entries of a remote tree beneath local directory ``root``."""

    def __init__(self, host: str, root: str, make_dirs: bool):
        self.host, self.root = host, root
        if make_dirs:
            os.makedirs(root, exist_ok=True)
        elif not os.path.isdir(root):
            os.mkdir(root, 0o700)
        self.mask = umask()
        self.root_fd = files.open_dir(root)  # the caller's own path, followed as given
        self._open: Tuple[Tuple[str, ...], int] = ((), self.root_fd)  # the last directory reached

    def directory(self, parts: Tuple[str, ...]) -> int:
        """The fd of directory ``parts``, reached from the root one component at a time, no link followed."""
        if parts == self._open[0]:
            return self._open[1]
        fd = self.root_fd
        for depth, part in enumerate(parts, 1):
            try:
                inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise TransferError("[%s] %r is a symlink or not a directory in %s; nothing is written beneath it"
                                    % (self.host, "/".join(parts[:depth]), self.root)) from None
            finally:
                if fd != self.root_fd:
                    os.close(fd)
            fd = inner
        self._forget()
        self._open = (parts, fd)
        return fd

    def _forget(self) -> None:
        if self._open[1] != self.root_fd:
            os.close(self._open[1])
        self._open = ((), self.root_fd)

    def make_dir(self, entry: Entry) -> None:
        if entry.parts:
            try:
                os.mkdir(entry.parts[-1], 0o700, dir_fd=self.directory(entry.parts[:-1]))
            except FileExistsError:
                pass  # a directory already here is used; anything else is refused when it is opened
            self.directory(entry.parts)

    def place_link(self, entry: Entry) -> None:
        """A symlink made under a temporary name and renamed over the entry's name."""
        assert entry.link is not None
        parent, name = self.directory(entry.parts[:-1]), entry.parts[-1]
        _check_replaceable(parent, name, os.path.join(self.root, entry.name))
        temp = files.temp_name(name)
        os.symlink(entry.link, temp, dir_fd=parent)
        try:
            os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            os.unlink(temp, dir_fd=parent)
            raise

    def file(self, entry: Entry) -> AtomicFile:
        return AtomicFile(os.dup(self.directory(entry.parts[:-1])), entry.parts[-1],
                          os.path.join(self.root, entry.name), self.mask)

    def finish(self, entries: List[Entry]) -> None:
        """Directories' modes and mtimes, deepest first (after their contents), set on their fds."""
        for entry in reversed(entries):
            if entry.kind == "dir":
                fd = self.directory(entry.parts)
                os.fchmod(fd, local_mode(entry.mode, self.mask))
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

    def close(self) -> None:
        self._forget()
        os.close(self.root_fd)
