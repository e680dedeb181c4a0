"""fetch over extra SSH sessions: a big remote file in byte ranges, each on a libssh session of its own. Controller-side.

The other direction of ``chopsticks.bulk`` (whose sessions, turns and rules it shares): the
tunnel's libssh2 session decrypts on the controller's one core, so a big fetch over the
tunnel's stream is bound by it. Here ``sessions`` extra logins to the same host
(``transports.libssh``: the tunnel's address, host key and credential) each run
``agent.ranges.RANGE_READER`` in an OS thread of its own, which sends one byte range of the
file; the thread writes it with ``os.pwrite`` at its offset into the controller's one
temporary file (the ``local_files.AtomicFile`` a fetch over the stream would write).

The agent keeps the file open from the first call (``agent.files.send_or_open``: a file too
small for a session is sent on the stream by that very call, so being a candidate costs a
small file no round trip) until ``close_source``, which says whether it changed meanwhile
(size, mtime, ctime, inode, as ``send`` checks); each reader opens it by path without
following a symlink and reads only if it is the very file (device and inode) the agent has
open. The controller commits its file (mode as data, mtime, fsync, rename) only once every
range is in with the CRC-32 its reader said, the file is the size the host said, and the
remote file did not change. The SHA-256 and SHA-1 a fetch returns are of the local copy,
read back in a pool thread that follows the ranges as they land (``_Digest``). Any failure
removes the temporary file and leaves the destination as it was.

Nothing the host says is trusted: ``send_or_open``'s answer is checked for shape and bounds
(``checked_source``), a reader must send exactly its range and then one well-formed line,
and nothing is reserved on the claimed size (``pwrite`` grows the file only as bytes come).
A session that cannot log in has written nothing: the whole file then comes over the
tunnel's stream, and ``bulk_unavailable`` is logged, as for put.
"""

import hashlib
import os
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent
from gevent.monkey import get_original

from chopsticks import bulk, local_files, logs
from chopsticks.agent import ranges as remote_ranges
from chopsticks.errors import ChopsticksError, TransferError
from chopsticks.transports.libssh import Login

MAX_SIZE = 1 << 63
# The read-back for the digests: large reads, off the hub (hashlib releases the GIL), and how
# long it waits for more to land.
DIGEST_READ = 1 << 20
DIGEST_WAIT = 0.005
_sleep = get_original("time", "sleep")  # a pool thread's own sleep, even under monkey-patching


def min_size(sessions: Optional[int]) -> int:
    """The smallest file ``bulk.session_count`` gives a session for ``sessions`` (not 0)."""
    return bulk.AUTO_MIN if sessions is None else bulk.MIN_RANGE


def checked_source(host: str, value: Any) -> Dict[str, Any]:
    """``send_or_open``'s answer (``agent.ranges.keep_source``), checked for shape and bounds:
    the path and inode name what the readers open, the size what they send, the mode and mtime
    what the local file is given."""
    source = local_files.checked_account(host, value, {"token": str, "remote_path": str, "size": int, "mode": int,
                                                       "mtime_ns": int, "dev": int, "ino": int})
    path = source["remote_path"]
    if not (0 < len(source["token"]) <= 64 and 0 < len(path) <= 4096 and "\0" not in path
            and 0 <= source["size"] <= MAX_SIZE and 0 <= source["dev"] < 1 << 64 and 0 <= source["ino"] < 1 << 64):
        raise TransferError("[%s] the host's account of the file to fetch is malformed: %s" % (host, repr(value)[:200]))
    local_files.check_attributes(host, path, source["mode"], source["mtime_ns"])
    return source


def receive_ranges(tunnel, login: Login, value: Any, sessions: Optional[int], sink: local_files.AtomicFile,
                   progress: Optional[Callable[[int], None]]) -> Optional[Dict[str, Any]]:
    """The remote file ``value`` (``send_or_open``'s answer) into ``sink`` over extra sessions
    logged in as ``login``, in its turn (``bulk.BULK_PUTS``), committed; the fetch's result, or
    None if a session could not log in (``sink`` is then empty, for the caller's stream).
    On any failure ``sink`` is discarded."""
    try:
        source = checked_source(tunnel.host, value)
    except BaseException:
        sink.discard()
        raise
    try:
        with bulk._turn():
            result = _receive_ranges(tunnel, login, source, sessions, sink, progress)
    except BaseException:
        sink.discard()
        _forget(tunnel, source["token"])  # harmless if already closed
        raise
    if result is None:
        _forget(tunnel, source["token"])
    return result


def _receive_ranges(tunnel, login: Login, source: Dict[str, Any], sessions: Optional[int],
                    sink: local_files.AtomicFile, progress: Optional[Callable[[int], None]]) -> Optional[Dict[str, Any]]:
    size, path = source["size"], source["remote_path"]
    count = max(1, bulk.session_count(size, sessions))  # a host that lies small still gets one range
    work = bulk.Ranges(size, count)
    digest = _Digest(_reopen(sink), size, work.parts)  # follows the ranges as they land
    hashing = gevent.get_hub().threadpool.spawn(digest.run)
    try:
        try:
            for rng in work.parts:
                work.start(_receive_range, rng, login, tunnel.python_command(remote_ranges.RANGE_READER, [
                    path, str(source["dev"]), str(source["ino"]), str(rng.offset), str(rng.length)]), sink.fd)
            work.wait(progress)
        finally:
            work.close()
        if work.login_failed() and not work.pending:
            logs.warning("bulk_unavailable", host=tunnel.host, reason=str(work.failures[0][1]))
            os.ftruncate(sink.fd, 0)  # every thread has ended: what a session wrote goes
            digest.stop()
            hashing.wait(bulk.ABORT_WAIT)
            return None
        if work.failures:
            rng, error = work.failure() if not work.login_failed() else work.failures[0]
            raise TransferError("[%s] the session reading %s of %s failed: %s; the local file was left as it was"
                                % (tunnel.host, rng, path, error)) from error
        _close(tunnel, source["token"])
        written = os.fstat(sink.fd).st_size
        if written != size:
            raise TransferError("[%s] the local copy of %s is %d bytes, not the %d the host said; the local file "
                                "was left as it was" % (tunnel.host, path, written, size))
        sha256, sha1 = hashing.get()
    except BaseException:
        digest.stop()
        hashing.wait(bulk.ABORT_WAIT)  # its fd closed before the fetch's error goes on
        raise
    sink.commit(source["mode"], source["mtime_ns"])
    return {"remote_path": path, "local_path": sink.path, "size": size, "sha1sum": sha1, "sha256": sha256,
            "sessions": len(work.parts)}


def _receive_range(rng: bulk._Range, login: Login, command: str, fd: int, done: Callable[[Any], None]) -> None:
    """In a range's thread (``bulk.Ranges.start``): log in, start the reader, write the range at
    its offset, check its CRC."""
    session = bulk._start(rng, login, command, "reader", done)
    if session is None:
        return
    crc = 0
    offset, end = rng.offset, rng.offset + rng.length
    while offset < end and not rng.aborted:
        data = session.read(min(bulk.READ, end - offset))
        if not data:
            stderr = bulk._quietly(session.read_error)
            raise TransferError("the host's range reader sent %d of its %d bytes%s" % (
                offset - rng.offset, rng.length, ": it said %s" % bulk._said(stderr) if stderr else ""))
        crc = zlib.crc32(data, crc)
        view = memoryview(data)
        at = offset
        while view:
            written = os.pwrite(fd, view, at)
            view, at = view[written:], at + written
        offset += len(data)
        done((rng, len(data), None))
    if rng.aborted:
        return
    said = session.read_line()
    if said != "D %08x" % crc:
        raise TransferError("the host's range reader did not send the range: it said %s" % bulk._said(said))


def _reopen(sink: local_files.AtomicFile) -> int:
    """A read-only fd of ``sink``'s temporary file (its own fd is write-only), by name in its
    directory without following a symlink, and only if it is the very file."""
    fd = os.open(sink.temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sink.dir_fd)
    mine, st = os.fstat(sink.fd), os.fstat(fd)
    if (mine.st_dev, mine.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise TransferError("the local temporary file %s was replaced while it was written" % sink.temp)
    return fd


class _Digest:
    """The SHA-256 and SHA-1 a fetch returns, of the local copy read back (``fd``, its own: it
    closes it), hashed in a pool thread while the ranges land: it follows the written prefix
    (every range before the first unfinished one, and what that one has written), so only
    what lands last is hashed after the transfer."""

    def __init__(self, fd: int, size: int, parts: List[bulk._Range]):
        self.fd, self.size, self.parts = fd, size, parts
        self.stopped = False

    def _written(self) -> int:
        for rng in self.parts:  # each range is written in order from its offset; ``sent`` after pwrite
            if rng.sent < rng.length:
                return rng.offset + rng.sent
        return self.size

    def stop(self) -> None:
        self.stopped = True

    def run(self) -> Optional[Tuple[str, str]]:
        sha256, sha1 = hashlib.sha256(), hashlib.sha1()
        offset = 0
        try:
            while offset < self.size and not self.stopped:
                ready = self._written()
                if ready <= offset:
                    _sleep(DIGEST_WAIT)
                    continue
                data = os.pread(self.fd, min(DIGEST_READ, ready - offset), offset)
                if not data:
                    raise TransferError("the local copy shrank while it was hashed")
                sha256.update(data)
                sha1.update(data)
                offset += len(data)
        finally:
            os.close(self.fd)
        return None if self.stopped else (sha256.hexdigest(), sha1.hexdigest())


def _close(tunnel, token: str) -> None:
    """``close_source``: the agent forgets the file; TransferError if it changed since opened."""
    with local_files.unchanged_remote(tunnel.host):
        tunnel.call(remote_ranges.close_source, token)


def _forget(tunnel, token: str) -> None:
    """Best effort, after a failure: the fetch's own error is what the caller sees."""
    if tunnel.closed:
        return
    try:
        tunnel.call(remote_ranges.close_source, token, timeout=bulk.DROP_TIMEOUT)
    except ChopsticksError:
        pass  # the agent keeps an fd open until it exits; nothing is left on disk
