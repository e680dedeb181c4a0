"""put and fetch: files to and from agents over file streams. Controller-side.

A file travels on a stream beside an ordinary call (``chopsticks.agent.files.receive`` or
``send``): raw ``STREAM`` frames of ``STREAM_CHUNK`` bytes behind a tiny header, written as
they were read, never joined or re-encoded. Credit bounds what is in flight per stream
(``STREAM_WINDOW``, by the rules of ``wire.window``), so a slow host holds back only its own
transfer and the controller's memory stays flat whatever the file size or host count.

What is sent comes from a ``Source`` (``chopsticks.sources``): one local file read and hashed
once for every tunnel sending it. Both ends write through the one ``AtomicFile``
(``agent.files``): a temporary file beside the destination, size and SHA-256 checked (one
``Tally``), fsynced, renamed, the directory fsynced; a failed or interrupted transfer leaves
the destination as it was. With ``if_changed``, a file the remote already has (same size
and SHA-256, ``agent.files.same_file``) is not sent: its digest is the Source's, computed
once before any tunnel sends, and the remote's answer is checked like any account.
"""

import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import gevent

from chopsticks import bulk, bulk_fetch, local_files, logs
from chopsticks.wire import protocol
from chopsticks.agent import files as remote_files
from chopsticks.connection import Connection, StreamState
from chopsticks.errors import CallTimeout, ChopsticksError, SpecialFileError, TransferError
from chopsticks.pickling import dumps_call
from chopsticks.sources import Source, Sources

CHUNK = protocol.STREAM_CHUNK
Progress = Optional[Callable[[int], None]]


def _connection(tunnel) -> Connection:
    return tunnel.connection()


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


# -- put ------------------------------------------------------------------------------------

def send_source(tunnel, source: Source, remote_path: Optional[str], mode: Optional[int], make_dirs: bool,
                progress: Progress = None, made: Optional[List[Tuple[str, bool]]] = None,
                sessions: Optional[int] = None) -> Dict[str, Any]:
    """Send one Source to one tunnel (a big file over extra sessions: ``chopsticks.bulk``); the
    remote's account of what it wrote. A new file (not one replaced) is noted in ``made``."""
    conn = _connection(tunnel)
    mode = source.mode if mode is None else mode
    result = None
    count = bulk.session_count(source.size, sessions)
    login = tunnel.bulk_login() if count else None
    if login is not None:
        result = bulk.send_ranges(tunnel, login, count, source, remote_path, mode, make_dirs, progress)
    if result is None:
        result = _send_stream(tunnel, conn, source, remote_path, mode, make_dirs, progress)
    if result.pop("created", None) is True and made is not None:
        made.append((result["remote_path"], False))
    if (result["size"], result["sha256"]) != (source.size, source.sha256):
        raise TransferError("[%s] the host wrote %d bytes with SHA-256 %s; %d bytes with SHA-256 %s were sent"
                            % (tunnel.host, result["size"], result["sha256"], source.size, source.sha256))
    result["sha1sum"] = source.sha1
    result["local_path"] = source.name
    return result


def _send_stream(tunnel, conn: Connection, source: Source, remote_path: Optional[str], mode: int, make_dirs: bool,
                 progress: Progress) -> Dict[str, Any]:
    """The file over the tunnel's own stream, beside ``agent.files.receive``."""
    state = conn.open_stream()
    future = _start(conn, state, remote_files.receive, state.sid, remote_path, mode, source.mtime_ns, make_dirs)
    ended = False
    try:
        for index in range(source.pieces):
            piece = source.piece(index)
            while not state.window.fits(len(piece)) and not future.done() and state.error is None:
                state.wake.clear()
                state.wake.wait()
            if future.done() or state.error is not None:
                break  # the remote gave up (its error is the result) or the tunnel ended
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
    return local_files.checked_account(tunnel.host, result, {"remote_path": str, "size": int, "sha256": str})


def already_there(tunnel, source: Source, remote_path: str, mode: int) -> Optional[Dict[str, Any]]:
    """put's ``if_changed``: the account of a skipped put if the remote file at ``remote_path``
    already has the Source's size and SHA-256 (the remote then gives it ``mode`` and the
    mtime, where they differ: ``agent.files.same_file``); None if it must be sent. The
    digest is the Source's, computed once for every tunnel. The host's answer is not trusted:
    it must be None or an account of exactly that size and digest, else TransferError, so a
    lying host can at most make this put skip or send."""
    size, sha256 = source.digest()
    changed = source.change()
    if changed is not None:
        raise TransferError("[%s] %s; the remote file was left as it was" % (tunnel.host, changed))
    answer = tunnel.call(remote_files.same_file, remote_path, size, sha256, mode, source.mtime_ns)
    if answer is None:
        return None
    account = local_files.checked_account(tunnel.host, answer, {"remote_path": str, "size": int, "sha256": str})
    if (account["size"], account["sha256"]) != (size, sha256):
        raise TransferError("[%s] the host's account of the file already there is malformed: %s"
                            % (tunnel.host, repr(answer)[:200]))
    return {"remote_path": account["remote_path"], "size": size, "sha256": sha256, "sha1sum": source.sha1,
            "local_path": source.name, "skipped": True}


def send_if_changed(tunnel, source: Source, remote_path: Optional[str], mode: Optional[int], make_dirs: bool,
                    progress: Progress = None, made: Optional[List[Tuple[str, bool]]] = None,
                    sessions: Optional[int] = None) -> Dict[str, Any]:
    """``send_source`` unless the remote file is already the same (``already_there``); the
    account says ``skipped``. A new temporary file (``remote_path`` None) is always sent."""
    if remote_path is not None:
        skipped = already_there(tunnel, source, remote_path, source.mode if mode is None else mode)
        if skipped is not None:
            return skipped
    result = send_source(tunnel, source, remote_path, mode, make_dirs, progress, made, sessions)
    result["skipped"] = False
    return result


def put_source(tunnel, source: Source, remote_path: Optional[str], mode: Optional[int], make_dirs: bool,
               timeout: Optional[float] = None, progress: Progress = None, if_changed: bool = False,
               sessions: Optional[int] = None) -> Dict[str, Any]:
    """``send_source`` (``send_if_changed`` with ``if_changed``) within ``timeout`` seconds
    (CallTimeout past them): one opened or spooled Source to one tunnel, as ``BaseTunnel.put``
    sends a file."""
    send = send_if_changed if if_changed else send_source
    return _with_timeout(tunnel, timeout, lambda: send(tunnel, source, remote_path, mode, make_dirs, progress,
                                                       sessions=sessions))


def check_mode(mode: Any) -> None:
    """``put``'s ``mode``: None (the local file's) or permission bits, an int from 0 to 0o7777."""
    if mode is None:
        return
    if type(mode) is bool or not isinstance(mode, int):
        raise TypeError("put's mode must be permission bits as an int such as 0o644, not %r" % (mode,))
    if not 0 <= mode <= local_files.MAX_MODE:
        raise ValueError("put's mode must be permission bits from 0 to 0o7777, not %s" % oct(mode))


def _put_entries(tunnel, sources: Sources, root: str, entries: List[list], target: str, make_dirs: bool,
                 progress: Progress, made: List[Tuple[str, bool]], if_changed: bool,
                 sessions: Optional[int]) -> Dict[str, Any]:
    """Create the tree on the remote, noting in ``made`` each path it creates (``[path, is_dir]``)."""
    remote_root, created = tunnel.call(remote_files.make_dir, target, 0o700, make_dirs)
    made.extend((path, True) for path in created)
    send = send_if_changed if if_changed else send_source
    size = files = links = skipped = 0
    dirs = []
    for rel, kind, mode, mtime_ns, link in entries:
        path = os.path.normpath(os.path.join(remote_root, rel))
        if kind == "dir":
            if rel != ".":
                made.extend((path, True) for path in tunnel.call(remote_files.make_dir, path, 0o700)[1])
            dirs.append([path, mode, mtime_ns])
        elif kind == "link":
            if tunnel.call(remote_files.make_link, link, path):
                made.append((path, False))
            links += 1
        else:
            source = sources.acquire(os.path.join(root, rel))
            try:
                result = send(tunnel, source, path, None, False, progress, made, sessions)
            finally:
                source.release()
            size += result["size"]
            skipped += result.get("skipped") is True
            files += 1
    tunnel.call(remote_files.set_dir_attributes, dirs[::-1])  # deepest first, after their contents
    account = {"local_path": root, "remote_path": remote_root, "size": size, "files": files, "dirs": len(dirs),
               "links": links}
    if if_changed:
        account["skipped"] = skipped
    return account


def put_tree(tunnel, sources: Sources, local_dir: str, remote_dir: Optional[str], make_dirs: bool,
             timeout: Optional[float] = None, progress: Progress = None, if_changed: bool = False,
             sessions: Optional[int] = None) -> Dict[str, Any]:
    """Copy a directory tree: directories with their modes, files (each atomic; with
    ``if_changed``, each skipped if already the same), symlinks as links. A FIFO, device or
    socket in it is refused before anything is sent; a put that fails removes what it created
    on the remote (never what was there before)."""
    root = os.path.abspath(local_dir)
    entries = remote_files.list_tree(root)  # the same walk the remote does for fetch
    for rel, kind, *_ in entries:
        if kind == "special":
            raise SpecialFileError("%s is %s" % (os.path.join(root, rel), local_files.SPECIAL))
    target = remote_dir if remote_dir is not None else os.path.basename(root)
    made: List[Tuple[str, bool]] = []
    try:
        return _with_timeout(tunnel, timeout, lambda: _put_entries(tunnel, sources, root, entries, target, make_dirs,
                                                                   progress, made, if_changed, sessions))
    except Exception:
        _remove_made(tunnel, made[::-1], timeout)
        raise


def _remove_made(tunnel, made: List[Tuple[str, bool]], timeout: Optional[float]) -> None:
    """Best effort: the put's own error is what the caller sees; what could not go is logged."""
    if not made or tunnel.closed:
        return
    try:
        left = tunnel.call(remote_files.remove_created, made, timeout=timeout)
    except ChopsticksError as exc:
        left = [["*", str(exc)]]
    if left:
        logs.warning("put_cleanup_incomplete", host=tunnel.host, left=left)


def put(tunnel, src, remote_path: Optional[str] = None, mode: Optional[int] = None, *, make_dirs: bool = False,
        timeout: Optional[float] = None, progress: Progress = None, if_changed: bool = False,
        sessions: Optional[int] = None, sources: Optional[Sources] = None) -> Dict[str, Any]:
    """``BaseTunnel.put``; ``sources`` shares open files between the tunnels of a Group."""
    check_mode(mode)
    bulk.check_sessions(sessions)
    own = sources is None
    sources = sources or Sources()
    try:
        if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
            return put_tree(tunnel, sources, os.fspath(src), remote_path, make_dirs, timeout, progress, if_changed,
                            sessions)
        source = sources.acquire(os.fspath(src)) if isinstance(src, (str, os.PathLike)) else Source(src)
        try:
            return put_source(tunnel, source, remote_path, mode, make_dirs, timeout, progress, if_changed, sessions)
        finally:
            source.release()
            if not isinstance(src, (str, os.PathLike)):
                source.close()
    finally:
        if own:
            sources.close()


# -- fetch ----------------------------------------------------------------------------------

class _ObjectSink:
    """Fetched bytes written as they come to a file object of the caller's."""

    def __init__(self, fileobj):
        self.fileobj = fileobj
        name = getattr(fileobj, "name", None)
        self.path = name if isinstance(name, str) else None

    def write(self, data: bytes) -> None:
        self.fileobj.write(data)

    def commit(self, mode: int, mtime_ns: int) -> None:
        if hasattr(self.fileobj, "flush"):
            self.fileobj.flush()

    def discard(self) -> None:
        pass


Sink = Union[_ObjectSink, local_files.AtomicFile]


def _sink(dst, make_dirs: bool) -> Sink:
    """Where a fetched file goes: a path (or None: a new temporary file), written atomically, or a file object."""
    if dst is None or isinstance(dst, (str, os.PathLike)):
        return local_files.file_at(None if dst is None else os.path.abspath(os.fspath(dst)), make_dirs)
    return _ObjectSink(dst)


def _remote_result(tunnel, future) -> Any:
    """The remote ``send``'s account; its "the file changed while I read it" is a TransferError."""
    with local_files.unchanged_remote(tunnel.host):
        return future.result()


def receive_file(tunnel, remote_path: str, sink: Sink, progress: Progress = None,
                 sessions: Optional[int] = 0) -> Dict[str, Any]:
    """Fetch one remote file into ``sink``, committed only if it arrived whole and unchanged: a
    big one over extra sessions (``chopsticks.bulk_fetch``) where ``sessions`` allows, the
    tunnel has a bulk login and ``sink`` is a local file (a file object gets the stream)."""
    login = None
    if sessions != 0 and isinstance(sink, local_files.AtomicFile):
        try:
            _connection(tunnel)
        except BaseException:
            sink.discard()
            raise
        login = tunnel.bulk_login()
    if login is None:
        return _receive_stream(tunnel, remote_path, sink, progress, None)
    first = _receive_stream(tunnel, remote_path, sink, progress, bulk_fetch.min_size(sessions))
    if "token" not in first:
        return first  # a file too small for a session: it came on the stream
    assert isinstance(sink, local_files.AtomicFile)
    result = bulk_fetch.receive_ranges(tunnel, login, first, sessions, sink, progress)
    if result is None:  # a session could not log in: the whole file over the stream
        result = _receive_stream(tunnel, remote_path, sink, progress, None)
    return result


def _receive_stream(tunnel, remote_path: str, sink: Sink, progress: Progress,
                    min_size: Optional[int]) -> Dict[str, Any]:
    """``receive_file`` over the tunnel's stream (``agent.files.send``); with ``min_size``, a
    file of that size or more is not sent but opened for range readers (``send_or_open``):
    its answer is returned as it came, ``sink`` left empty and open."""
    try:
        conn = _connection(tunnel)
        state = conn.open_stream()
    except BaseException:
        sink.discard()
        raise
    try:
        if min_size is None:
            future = _start(conn, state, remote_files.send, state.sid, remote_path)
        else:
            future = _start(conn, state, remote_files.send_or_open, state.sid, remote_path, min_size)
        tally = remote_files.Tally(sha1=True)
        while True:
            if state.chunks:
                chunk = state.chunks.popleft()
                sink.write(chunk)
                tally.update(chunk)
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
        value = _remote_result(tunnel, future)  # all it sent came before its result
        if min_size is not None and isinstance(value, dict) and "token" in value:
            if tally.size:
                raise TransferError("[%s] the host sent %d bytes of a file it kept for range readers"
                                    % (tunnel.host, tally.size))
            return value
        info = local_files.checked_account(tunnel.host, value, {"remote_path": str, "size": int, "sha256": str,
                                                                "mode": int, "mtime_ns": int})
        local_files.check_attributes(tunnel.host, info["remote_path"], info["mode"], info["mtime_ns"])
        if not tally.matches(info["size"], info["sha256"]):
            raise TransferError("[%s] received %d bytes with SHA-256 %s; the host sent %d bytes with SHA-256 %s"
                                % (tunnel.host, tally.size, tally.sha256, info["size"], info["sha256"]))
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
    return {"remote_path": info["remote_path"], "local_path": sink.path, "size": tally.size,
            "sha1sum": tally.sha1, "sha256": info["sha256"]}


def fetch_tree(tunnel, remote_dir: str, local_dir: str, make_dirs: bool, progress: Progress = None,
               sessions: Optional[int] = 0) -> Dict[str, Any]:
    """Copy a remote tree under ``local_dir``; the remote's listing is checked whole before anything
    is written, and nothing is written, chmodded or timed outside ``local_dir`` (``local_files``)."""
    entries = local_files.check_listing(tunnel.host, tunnel.call(remote_files.list_tree, remote_dir))
    writer = local_files.TreeWriter(tunnel.host, os.path.abspath(local_dir), make_dirs)
    size = files = 0
    try:
        for entry in entries:
            if entry.kind == "dir":
                writer.make_dir(entry)
            elif entry.kind == "link":
                writer.place_link(entry)
            else:
                size += receive_file(tunnel, os.path.join(remote_dir, entry.name), writer.file(entry), progress,
                                     sessions)["size"]
                files += 1
        writer.finish(entries)
    finally:
        writer.close()
    return {"remote_path": remote_dir, "local_path": writer.root, "size": size, "files": files,
            "dirs": sum(entry.kind == "dir" for entry in entries)}


def fetch(tunnel, remote_path: str, local_path=None, *, make_dirs: bool = False, timeout: Optional[float] = None,
          progress: Progress = None, sessions: Optional[int] = None) -> Dict[str, Any]:
    """``BaseTunnel.fetch``."""
    bulk.check_sessions(sessions, "fetch")

    def work():
        kind = tunnel.call(remote_files.kind, remote_path)
        if kind == "special":
            raise SpecialFileError("[%s] %s is %s" % (tunnel.host, remote_path, local_files.SPECIAL))
        if kind == "dir":
            if local_path is None or not isinstance(local_path, (str, os.PathLike)):
                raise ValueError("fetching the directory %s needs a local directory path" % remote_path)
            return fetch_tree(tunnel, remote_path, os.fspath(local_path), make_dirs, progress, sessions)
        return receive_file(tunnel, remote_path, _sink(local_path, make_dirs), progress, sessions)
    return _with_timeout(tunnel, timeout, work)


def host_paths(hosts: List[str], template) -> Iterator[Tuple[str, Any]]:
    """``(host, local path)`` for a fetch from many hosts (``jobs.Fetch.for_hosts``):
    ``template.format(host=...)``, refused if two hosts would get the same path; None gives
    each host a temporary file."""
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
