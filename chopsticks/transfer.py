"""put and fetch: files to and from agents over file streams. Controller-side.

A file travels on a stream beside an ordinary call (``remote_files.receive`` or ``send``):
raw ``STREAM`` frames of ``STREAM_CHUNK`` bytes behind a tiny header, written as they were
read, never joined or re-encoded. Credit bounds what is in flight per stream
(``STREAM_WINDOW``), so a slow host holds back only its own transfer and the controller's
memory stays flat whatever the file size or host count.

What is sent comes from a ``Source`` (``chopsticks.sources``): one local file read and hashed
once for every tunnel sending it. Both ends write to a temporary
file beside the destination, check size and SHA-256, fsync, then rename, so a failed or
interrupted transfer leaves the destination as it was.
"""

import errno
import hashlib
import os
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import gevent

from chopsticks import protocol, remote_files
from chopsticks.connection import Connection, StreamState
from chopsticks.errors import CallTimeout, TransferError
from chopsticks.pickling import dumps_call
from chopsticks.sources import Source, Sources

CHUNK = protocol.STREAM_CHUNK
Progress = Optional[Callable[[int], None]]


def _connection(tunnel) -> Connection:
    tunnel.connect()
    conn = tunnel._conn
    if conn is None:  # closed by another greenlet meanwhile
        raise TransferError("[%s] the tunnel was closed" % tunnel.host)
    return conn


def _start(conn: Connection, state: StreamState, fn, *args):
    future = conn.submit(dumps_call(fn, args, {}), remote_files.__name__)
    future.add_done_callback(lambda _: state.wake.set())
    return future


def _with_timeout(tunnel, timeout: Optional[float], work: Callable[[], Any]) -> Any:
    if timeout is None:
        return work()
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        return work()
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise CallTimeout("[%s] the transfer did not finish within %ss" % (tunnel.host, timeout)) from None
    finally:
        timer.close()


def _account(tunnel, value: Any, fields: Dict[str, type]) -> Dict[str, Any]:
    """The remote's account of a transfer, checked for shape (the remote is not trusted)."""
    if not isinstance(value, dict) or any(type(value.get(name)) is not kind for name, kind in fields.items()):
        raise TransferError("[%s] the host's account of the transfer is malformed: %s"
                            % (tunnel.host, repr(value)[:200]))
    return value


# -- put ------------------------------------------------------------------------------------

def send_source(tunnel, source: Source, remote_path: Optional[str], mode: Optional[int], make_dirs: bool,
                progress: Progress = None) -> Dict[str, Any]:
    """Send one Source to one tunnel; the remote's account of what it wrote."""
    conn = _connection(tunnel)
    state = conn.open_stream()
    future = _start(conn, state, remote_files.receive, state.sid, remote_path,
                    source.mode if mode is None else mode, source.mtime_ns, make_dirs)
    ended = False
    try:
        for index in range(source.pieces):
            piece = source.piece(index)
            while state.credit < len(piece) and not future.done() and state.error is None:
                state.wake.clear()
                state.wake.wait()
            if future.done() or state.error is not None:
                break  # the remote gave up (its error is the result) or the tunnel ended
            state.credit -= len(piece)
            try:
                conn.stream_send(state, piece)
            except OSError:
                break  # the tunnel ended: the future fails with the reason
            if progress is not None:
                progress(len(piece))
        changed = source.change()
        try:
            if changed is None and not future.done() and state.error is None:
                conn.stream_end(state, {"size": source.size, "sha256": source.sha256})
            else:
                conn.stream_end(state, {"abort": changed or "the controller stopped sending"})
        except OSError:
            pass
        ended = True
        try:
            result = future.result()
        except Exception:
            if changed is not None:
                raise TransferError("[%s] %s; the remote file was left as it was" % (tunnel.host, changed)) from None
            raise
    except BaseException:
        if not ended and not conn.closed:
            try:
                conn.stream_end(state, {"abort": "the controller stopped sending"})
            except OSError:
                pass
        raise
    finally:
        conn.close_stream(state)
    result = _account(tunnel, result, {"remote_path": str, "size": int, "sha256": str})
    if (result["size"], result["sha256"]) != (source.size, source.sha256):
        raise TransferError("[%s] the host wrote %d bytes with SHA-256 %s; %d bytes with SHA-256 %s were sent"
                            % (tunnel.host, result["size"], result["sha256"], source.size, source.sha256))
    result["sha1sum"] = source.sha1
    result["local_path"] = source.name
    return result


def put_tree(tunnel, sources: Sources, local_dir: str, remote_dir: Optional[str], make_dirs: bool,
             progress: Progress = None) -> Dict[str, Any]:
    """Copy a directory tree: directories with their modes, files (each atomic), symlinks as links."""
    root = os.path.abspath(local_dir)
    entries = remote_files.list_tree(root)  # the same walk the remote does for fetch
    target = remote_dir if remote_dir is not None else os.path.basename(root)
    remote_root = tunnel.call(remote_files.make_dir, target, 0o700, make_dirs)
    size = files = links = 0
    dirs = []
    for rel, kind, mode, mtime_ns, link in entries:
        path = os.path.normpath(os.path.join(remote_root, rel))
        if kind == "dir":
            if rel != ".":
                tunnel.call(remote_files.make_dir, path, 0o700)
            dirs.append([path, mode, mtime_ns])
        elif kind == "link":
            tunnel.call(remote_files.make_link, link, path)
            links += 1
        else:
            source = sources.acquire(os.path.join(root, rel))
            try:
                size += send_source(tunnel, source, path, None, False, progress)["size"]
            finally:
                source.release()
            files += 1
    tunnel.call(remote_files.set_dir_attributes, dirs[::-1])  # deepest first, after their contents
    return {"local_path": root, "remote_path": remote_root, "size": size, "files": files, "dirs": len(dirs),
            "links": links}


def put(tunnel, src, remote_path: Optional[str] = None, mode: Optional[int] = None, *, make_dirs: bool = False,
        timeout: Optional[float] = None, progress: Progress = None,
        sources: Optional[Sources] = None) -> Dict[str, Any]:
    """``BaseTunnel.put``; ``sources`` shares open files between the tunnels of a Group."""
    own = sources is None
    sources = sources or Sources()
    try:
        if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
            return _with_timeout(tunnel, timeout, lambda: put_tree(tunnel, sources, os.fspath(src), remote_path,
                                                                   make_dirs, progress))
        source = sources.acquire(os.fspath(src)) if isinstance(src, (str, os.PathLike)) else Source(src)
        try:
            return _with_timeout(tunnel, timeout, lambda: send_source(tunnel, source, remote_path, mode, make_dirs,
                                                                      progress))
        finally:
            source.release()
            if not isinstance(src, (str, os.PathLike)):
                source.close()
    finally:
        if own:
            sources.close()


# -- fetch ----------------------------------------------------------------------------------

class _Sink:
    """Where fetched bytes go: a temporary file renamed over the destination at the end, or a
    file object written as is."""

    def __init__(self, dst, make_dirs: bool):
        self.fileobj = None
        self.fd: Optional[int] = None
        self.temp: Optional[str] = None
        self.path: Optional[str]
        if dst is None:
            self.fd, self.temp = tempfile.mkstemp(prefix="chopsticks-fetch-")
            self.path = self.temp
        elif isinstance(dst, (str, os.PathLike)):
            self.path = os.path.abspath(os.fspath(dst))
            if os.path.isdir(self.path):
                raise IsADirectoryError(errno.EISDIR, "the local destination is a directory", self.path)
            parent = os.path.dirname(self.path)
            if not os.path.isdir(parent):
                if not make_dirs:
                    raise FileNotFoundError(errno.ENOENT, "the local destination's directory does not exist", parent)
                os.makedirs(parent, exist_ok=True)
            self.fd, self.temp = tempfile.mkstemp(dir=parent, prefix="." + os.path.basename(self.path) + ".",
                                                  suffix=".chopsticks-part")
        else:
            self.fileobj = dst
            name = getattr(dst, "name", None)
            self.path = name if isinstance(name, str) else None

    def write(self, data: bytes) -> None:
        if self.fileobj is not None:
            self.fileobj.write(data)
            return
        assert self.fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def commit(self, mode: int, mtime_ns: int) -> None:
        if self.fileobj is not None:
            if hasattr(self.fileobj, "flush"):
                self.fileobj.flush()
            return
        assert self.fd is not None and self.temp is not None and self.path is not None
        os.fchmod(self.fd, mode)
        os.utime(self.fd, ns=(mtime_ns, mtime_ns))
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        if self.temp != self.path:
            os.rename(self.temp, self.path)
        self.temp = None

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.temp is not None:
            try:
                os.unlink(self.temp)
            except OSError:
                pass
            self.temp = None


def receive_file(tunnel, remote_path: str, dst, make_dirs: bool, progress: Progress = None) -> Dict[str, Any]:
    """Fetch one remote file into ``dst`` (a path, a file object, or None for a temporary file)."""
    conn = _connection(tunnel)
    sink = _Sink(dst, make_dirs)
    state = conn.open_stream()
    try:
        future = _start(conn, state, remote_files.send, state.sid, remote_path)
        sha1, sha256, size = hashlib.sha1(), hashlib.sha256(), 0
        while True:
            if state.chunks:
                chunk = state.chunks.popleft()
                sink.write(chunk)
                sha1.update(chunk)
                sha256.update(chunk)
                size += len(chunk)
                try:
                    conn.stream_credit(state, len(chunk))
                except OSError:
                    break  # the tunnel ended: the future fails with the reason
                if progress is not None:
                    progress(len(chunk))
            elif future.done() or state.error is not None:
                break
            else:
                state.wake.clear()
                state.wake.wait()
        info = _account(tunnel, future.result(),  # everything it sent arrived before its result
                        {"remote_path": str, "size": int, "sha256": str, "mode": int, "mtime_ns": int})
        if size != info["size"] or sha256.hexdigest() != info["sha256"]:
            raise TransferError("[%s] received %d bytes with SHA-256 %s; the host sent %d bytes with SHA-256 %s"
                                % (tunnel.host, size, sha256.hexdigest(), info["size"], info["sha256"]))
        sink.commit(info["mode"], info["mtime_ns"])
    except BaseException:
        sink.discard()
        raise
    finally:
        if not conn.closed:
            try:
                conn.stream_end(state, {})  # the agent may forget the stream (or stop sending)
            except OSError:
                pass
        conn.close_stream(state)
    return {"remote_path": info["remote_path"], "local_path": sink.path, "size": size,
            "sha1sum": sha1.hexdigest(), "sha256": info["sha256"]}


def fetch_tree(tunnel, remote_dir: str, local_dir: str, make_dirs: bool, progress: Progress = None) -> Dict[str, Any]:
    entries = tunnel.call(remote_files.list_tree, remote_dir)
    root = os.path.abspath(local_dir)
    if make_dirs:
        os.makedirs(root, exist_ok=True)
    elif not os.path.isdir(root):
        os.mkdir(root, 0o700)
    size = files = 0
    dirs: List[Tuple[str, int, int]] = []
    for rel, kind, mode, mtime_ns, link in entries:
        if os.path.isabs(rel) or rel.split(os.sep)[0] == "..":
            raise TransferError("[%s] the remote listed a path outside the directory: %r" % (tunnel.host, rel))
        path = os.path.normpath(os.path.join(root, rel))
        if kind == "dir":
            os.makedirs(path, 0o700, exist_ok=True)
            dirs.append((path, mode, mtime_ns))
        elif kind == "link":
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(link, path)
        elif kind == "file":
            size += receive_file(tunnel, os.path.join(remote_dir, rel), path, False, progress)["size"]
            files += 1
    for path, mode, mtime_ns in reversed(dirs):
        os.chmod(path, mode)
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return {"remote_path": remote_dir, "local_path": root, "size": size, "files": files, "dirs": len(dirs)}


def fetch(tunnel, remote_path: str, local_path=None, *, make_dirs: bool = False, timeout: Optional[float] = None,
          progress: Progress = None) -> Dict[str, Any]:
    """``BaseTunnel.fetch``."""
    def work():
        if tunnel.call(remote_files.kind, remote_path) == "dir":
            if local_path is None or not isinstance(local_path, (str, os.PathLike)):
                raise ValueError("fetching the directory %s needs a local directory path" % remote_path)
            return fetch_tree(tunnel, remote_path, os.fspath(local_path), make_dirs, progress)
        return receive_file(tunnel, remote_path, local_path, make_dirs, progress)
    return _with_timeout(tunnel, timeout, work)


def host_paths(hosts: List[str], template) -> Iterator[Tuple[str, Any]]:
    """``(host, local path)`` for ``Group.fetch``: ``template.format(host=...)``, refused if two
    hosts would get the same path; None gives each host a temporary file."""
    if template is None:
        return ((host, None) for host in hosts)
    if not isinstance(template, (str, os.PathLike)):
        raise TypeError("Group.fetch takes a local path template, not %r" % (template,))
    text = os.fspath(template)
    try:
        paths = [text.format(host=host) for host in hosts]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError("bad local path template %r: %s (use {host})" % (text, exc)) from None
    if len(set(paths)) != len(paths):
        raise ValueError("the local path template %r gives several hosts the same path; put {host} in it" % text)
    return zip(hosts, paths)
