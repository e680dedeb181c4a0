"""put over extra SSH sessions: a big file in byte ranges, each on a libssh session of its own. Controller-side.

A tunnel's libssh2 session encrypts about 200 MiB per CPU-second, one core's worth, so a big
push over the tunnel's stream is bound by the controller's one core. Here the file goes
instead over ``sessions`` extra logins to the same host (``transports.libssh``: the tunnel's
address, host key and credential, nothing decided twice), each in an OS thread of its own
sending one byte range of it, encrypted by libssh four times cheaper than libssh2 and on as
many cores as there are sessions.

The tunnel's agent keeps every guarantee of ``put``: ``agent.ranges.open_part`` makes the
temporary file beside the destination and reserves its blocks (a full disk fails there,
before a byte is sent); each session runs ``agent.ranges.RANGE_WRITER``, which writes its
range into that very file (by device and inode) and answers the range's size and CRC-32,
checked against what this side read and sent; ``finish_part`` commits the file (mode, mtime,
fsync, rename) once every range is in and the local file is unchanged; on any failure
``drop_part`` removes it. The whole file's SHA-256 (and SHA-1, for the original's
``sha1sum``) is hashed once by the ``Source`` while the ranges go, as for every put.

Why CRC-32 and not SHA-256 for a range: the bytes cross SSH, whose MAC already refuses any
that changed on the way, and the host can write what it likes whatever it answers; the
range check is there to catch a range cut short or framed wrong, for which CRC-32 is as good
and costs a third of the CPU on both ends (0.24 against 0.68 CPU-s per GiB here), and on
two shared cores CPU is wall time.

If a session cannot log in (libssh refuses a key format libssh2 took, sshd refuses more
logins, a host key other than the tunnel's), the whole file goes over the tunnel's stream
instead (what other sessions sent goes with the temporary file), and ``bulk_unavailable`` is
logged with the reason. A session that fails once sending fails the put (a
``TransferError`` naming the range), and the temporary file is removed.

``Ranges`` (the hub's side of a transfer's range threads), ``_start`` (a range's login and
command) and ``_range_thread`` serve ``chopsticks.bulk_fetch`` too, the other direction.
"""

import os
import weakref
import zlib
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import gevent
import gevent.event
import gevent.lock
from gevent.monkey import get_original

from chopsticks import logs
from chopsticks.agent import ranges as remote_ranges
from chopsticks.errors import ChopsticksError, ConnectError, TransferError
from chopsticks.local_files import checked_account
from chopsticks.shards.hub_thread import Inbox
from chopsticks.sources import Source
from chopsticks.transports.libssh import BulkSession, Login

MIB = 1 << 20
# The most sessions one put may open to one host (they log in at once, and sshd's default
# MaxStartups 10:30:100 starts dropping unauthenticated connections past 10), and the
# smallest range worth a session.
MAX_SESSIONS = 8
MIN_RANGE = 4 * MIB
# ``sessions=None``: files from AUTO_MIN bytes go over one session, from AUTO_TWO over two.
AUTO_MIN = 8 * MIB
AUTO_TWO = 64 * MIB
# Each session's reads: small enough that fifty hosts at once cost the controller ~0.5 MiB each
# (1 MiB reads doubled its peak RSS at 50 hosts), large enough to cost nothing in speed.
READ = 128 << 10
# How long the agent may take to remove the temporary file of a put that failed, and how long
# a failed put waits for its other sessions' threads to end (their fds closed, nothing more
# written) before it returns.
DROP_TIMEOUT = 10.0
ABORT_WAIT = 5.0

_start_thread = get_original("_thread", "start_new_thread")  # an OS thread even under monkey-patching
# How many puts and fetches of this process may use extra sessions at once (each up to
# ``sessions`` threads and logins), so that a thousand hosts at once are not thousands of
# threads; a transfer waits for its turn (its timeout counts the wait). Many at once hide each put's round trips
# and logins: to 50 loopback hosts, 8 at a time took 7.0 s where 50 took 4.1.
BULK_PUTS = 64
_turns: "weakref.WeakKeyDictionary[Any, gevent.lock.BoundedSemaphore]" = weakref.WeakKeyDictionary()


def _turn() -> gevent.lock.BoundedSemaphore:
    """The turns of the calling thread's hub (a gevent lock belongs to one hub)."""
    hub = gevent.get_hub()
    turns = _turns.get(hub)
    if turns is None:
        turns = _turns[hub] = gevent.lock.BoundedSemaphore(BULK_PUTS)
    return turns


def check_sessions(sessions: Any, verb: str = "put") -> None:
    """``put``'s (or ``fetch``'s) ``sessions``: None (chosen by size) or a whole number from 0
    to MAX_SESSIONS."""
    if sessions is None:
        return
    if type(sessions) is bool or not isinstance(sessions, int):
        raise TypeError("%s's sessions must be a whole number or None, not %r" % (verb, sessions))
    if not 0 <= sessions <= MAX_SESSIONS:
        raise ValueError("%s's sessions must be from 0 to %d, not %d" % (verb, MAX_SESSIONS, sessions))


def session_count(size: int, sessions: Optional[int]) -> int:
    """How many extra sessions carry a file of ``size`` bytes (0: the tunnel's own stream): one
    per MIN_RANGE at most, so a file under it stays on the stream whatever ``sessions`` says (a
    tree put would otherwise log in again for each of its small files)."""
    if sessions is None:
        sessions = 0 if size < AUTO_MIN else 1 if size < AUTO_TWO else 2
    return max(0, min(sessions, size // MIN_RANGE))


def ranges(size: int, parts: int) -> List[Tuple[int, int]]:
    """``(offset, length)`` of ``parts`` contiguous ranges covering ``size`` bytes, in whole MiB
    but the last."""
    step = -(-size // parts // MIB) * MIB
    cuts = [min(size, i * step) for i in range(parts + 1)]
    return [(start, end - start) for start, end in zip(cuts, cuts[1:]) if end > start]


class _Range:
    """One byte range and the session moving it (in its thread)."""

    def __init__(self, offset: int, length: int):
        self.offset = offset
        self.length = length
        self.sent = 0  # bytes moved so far, as the hub has heard
        self.session: Optional[BulkSession] = None
        self.aborted = False

    def __str__(self) -> str:
        return "bytes %d-%d" % (self.offset, self.offset + self.length)

    def abort(self) -> None:
        """From the hub: end the session's blocking work (its thread then ends)."""
        self.aborted = True
        if self.session is not None:
            self.session.abort()


class _LoginFailed(Exception):
    """A session could not log in: nothing was sent on it."""


def _said(line: str) -> str:
    """What a host's writer said, as shown in a message (it is not trusted: printable, bounded)."""
    return repr(line[:200])


def _start(rng: _Range, login: Login, command: str, what: str, done: Callable[[Any], None]) -> Optional[BulkSession]:
    """In a range's thread: its session logged in and its command (the host's range ``what``)
    started, which the hub then hears (``(rng, 0, None)``); None if the transfer was aborted
    meanwhile. The thread closes ``rng.session`` whatever happens."""
    session = rng.session = BulkSession(login)
    if rng.aborted:
        return None
    try:
        session.open()
    except ConnectError as exc:
        raise _LoginFailed(str(exc)) from exc
    if rng.aborted:  # while it logged in
        return None
    session.run(command)
    said = session.read_line()
    if said != "R":
        stderr = _quietly(session.read_error) if not said else ""
        raise TransferError("the host's range %s did not start: %s" % (what, _said(said or stderr)))
    session.started()
    done((rng, 0, None))
    return session


def _send_range(rng: _Range, login: Login, command: str, fd: int, done: Callable[[Any], None]) -> None:
    """In a range's thread (``Ranges.start``): log in, start the writer, send the range, check
    the writer's account."""
    session = _start(rng, login, command, "writer", done)
    if session is None:
        return
    crc = 0
    offset, end = rng.offset, rng.offset + rng.length
    while offset < end and not rng.aborted:
        data = os.pread(fd, min(READ, end - offset), offset)
        if not data:
            raise TransferError("the local file shrank while it was being sent")
        crc = zlib.crc32(data, crc)
        try:
            session.write(data)
        except Exception as exc:
            said = _quietly(session.read_line)
            raise TransferError("the session ended while sending%s" % (
                ": the host said %s" % _said(said) if said else " (%s)" % exc)) from exc
        offset += len(data)
        done((rng, len(data), None))
    session.end_input()
    said = session.read_line()
    if said != "D %d %08x" % (rng.length, crc):
        raise TransferError("the host's range writer did not write the range: it said %s" % _said(said))


def _range_thread(body: Callable[..., None], rng: _Range, login: Login, command: str, fd: int,
                  done: Callable[[Any], None]) -> None:
    error: Optional[BaseException] = None
    try:
        body(rng, login, command, fd, done)
    except BaseException as exc:
        error = exc
    finally:
        os.close(fd)
        if rng.session is not None:
            rng.session.close()
        done((rng, None, error))


def _quietly(read: Callable[[], str]) -> str:
    """What the host's writer said last, if anything can still be read (it is only shown)."""
    try:
        return read()
    except Exception:
        return ""


class Ranges:
    """The hub's side of one transfer's range threads: it starts them (``start``), hears what
    they say through an ``Inbox`` (started, bytes moved, ended), waits for them (``wait``),
    and stops what is left (``close``)."""

    def __init__(self, size: int, count: int):
        self.parts = [_Range(offset, length) for offset, length in ranges(size, count)]
        self.pending = set(self.parts)
        self.started: Set[_Range] = set()
        self.failures: List[Tuple[_Range, BaseException]] = []
        self.moved = 0
        self._wake = gevent.event.Event()
        self._inbox = Inbox(self._take)

    def _take(self, item) -> None:  # in the hub
        rng, n, error = item
        if n == 0:
            self.started.add(rng)
        elif n is not None:
            self.moved += n
            rng.sent += n
        else:
            self.pending.discard(rng)
            if error is not None:
                self.failures.append((rng, error))
        self._wake.set()

    def start(self, body: Callable[..., None], rng: _Range, login: Login, command: str, fd: int) -> None:
        """``body(rng, login, command, own fd, report)`` in an OS thread, with a dup of ``fd`` of
        its own; whatever it raises is the range's failure, and its fd and session are closed
        when it ends, whenever the transfer does."""
        own = os.dup(fd)
        try:
            _start_thread(_range_thread, (body, rng, login, command, own, self._inbox.put))
        except BaseException:
            os.close(own)
            self.pending.discard(rng)
            raise

    def wait(self, progress: Optional[Callable[[int], None]]) -> None:
        """Until every range ended or one failed. Bytes are counted once every session has
        started: until then the transfer may still go over the tunnel's stream instead, and
        count every byte there."""
        reported = 0
        while self.pending and not self.failures:
            self._wake.wait()
            self._wake.clear()
            if progress is not None and self.moved > reported and len(self.started) == len(self.parts):
                progress(self.moved - reported)
                reported = self.moved

    def login_failed(self) -> bool:
        """Every failure a session that could not log in (which moved nothing)."""
        return bool(self.failures) and all(isinstance(error, _LoginFailed) for _, error in self.failures)

    def failure(self) -> Tuple[_Range, BaseException]:
        """The first failure that was not a login's."""
        return next(f for f in self.failures if not isinstance(f[1], _LoginFailed))

    def close(self) -> None:
        """Stop the ranges still going and wait (up to ABORT_WAIT) for their threads to end;
        the Inbox is closed even if interrupted meanwhile."""
        try:
            for rng in self.pending:
                rng.abort()
            with gevent.Timeout(ABORT_WAIT, False):  # their sockets are shut: they end at once
                while self.pending:
                    self._wake.wait()
                    self._wake.clear()
        finally:
            self._inbox.close()


def send_ranges(tunnel, login: Login, count: int, source: Source, remote_path: Optional[str], mode: int,
                make_dirs: bool, progress: Optional[Callable[[int], None]]) -> Optional[Dict[str, Any]]:
    """``source`` to ``tunnel``'s host over ``count`` sessions logged in as ``login``, in its turn
    (``BULK_PUTS``); the account of what was written (as ``transfer.send_source``'s), or None
    if a session could not log in (the caller sends over the tunnel)."""
    with _turn():
        return _send_ranges(tunnel, login, count, source, remote_path, mode, make_dirs, progress)


def _send_ranges(tunnel, login: Login, count: int, source: Source, remote_path: Optional[str], mode: int,
                 make_dirs: bool, progress: Optional[Callable[[int], None]]) -> Optional[Dict[str, Any]]:
    token = os.urandom(8).hex()  # ours: the file can be dropped even if open_part's answer is lost
    work = Ranges(source.size, count)
    digesting: Optional[gevent.Greenlet] = None
    committed = False
    try:
        part = _part(tunnel, token, tunnel.call(remote_ranges.open_part, token, remote_path, source.size, make_dirs))
        for rng in work.parts:
            work.start(_send_range, rng, login, tunnel.python_command(remote_ranges.RANGE_WRITER, [
                part["temp_path"], str(part["dev"]), str(part["ino"]), str(rng.offset), str(rng.length)]), source.fd)
        digesting = gevent.spawn(source.digest)  # the whole file's, once for every host, while the ranges go
        work.wait(progress)
        if work.login_failed():
            logs.warning("bulk_unavailable", host=tunnel.host, reason=str(work.failures[0][1]))
            return None
        if work.failures:
            rng, error = work.failure()
            raise TransferError("[%s] the session sending %s of %s failed: %s; the remote file was left as it was"
                                % (tunnel.host, rng, source.label, error)) from error
        digesting.get()
        changed = source.change()
        if changed is not None:
            raise TransferError("[%s] %s; the remote file was left as it was" % (tunnel.host, changed))
        account = tunnel.call(remote_ranges.finish_part, token, source.size, mode, source.mtime_ns)
        committed = True
    finally:
        try:
            if digesting is not None:
                digesting.kill(block=False)
            work.close()
        finally:
            if not committed:
                _drop(tunnel, token)
    account = checked_account(tunnel.host, account, {"remote_path": str, "size": int, "created": bool})
    if account["size"] != source.size:
        raise TransferError("[%s] the host's account of the file is malformed: %s" % (tunnel.host, repr(account)[:200]))
    # the SHA-256 is the controller's own, of what it read: each range was checked by its CRC-32
    account.update(sha256=source.sha256, sessions=len(work.parts))
    return account


def _part(tunnel, token: str, value: Any) -> Dict[str, Any]:
    """``open_part``'s answer, checked: it names what the writers will open on the host."""
    part = checked_account(tunnel.host, value, {"token": str, "temp_path": str, "dev": int, "ino": int})
    if not (0 < len(part["temp_path"]) <= 4096 and "\0" not in part["temp_path"]
            and part["token"] == token and 0 <= part["dev"] < 1 << 64 and 0 <= part["ino"] < 1 << 64):
        raise TransferError("[%s] the host's temporary file for the put is malformed: %s"
                            % (tunnel.host, repr(value)[:200]))
    return part


def _drop(tunnel, token: str) -> None:
    """Best effort: the put's own error is what the caller sees; what could not go is logged."""
    if tunnel.closed:
        return
    try:
        tunnel.call(remote_ranges.drop_part, token, timeout=DROP_TIMEOUT)
    except ChopsticksError as exc:
        logs.warning("put_cleanup_incomplete", host=tunnel.host, left=[["*", str(exc)]])
