"""A remote command's SSH channel as a byte pipe, driven from the gevent hub. Transport layer.

stdout and stderr are read by callbacks that run whenever the socket is readable
(``start_reading``), writes wait on the socket as libssh2 asks. libssh2
reads the socket inside other calls too (a write drains incoming packets first), so after
any call that may have buffered channel data, the pipe drains it: otherwise nothing would
wake us for data that already left the socket.
"""

import errno
import signal
import socket
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

import gevent.socket
from gevent.hub import get_hub
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import LIBSSH2_SESSION_BLOCK_OUTBOUND

from chopsticks import logs
from chopsticks.transports.libssh2 import (
    CLOSE_ERRORS, DENIED, READ_SIZE, SSH2Error, Deadline, describe, reason, retry,
)

if TYPE_CHECKING:  # pragma: no cover
    from chopsticks.transports.ssh import SSHLink

# Bytes handed to libssh2 per write call. It sends at most one packet (32 KiB of data) per
# call, and ssh2-python wants ``bytes``: a larger slice would be copied again on every call.
WRITE_SLICE = 32 << 10
# The variable a keepalive asks the server to set: a request it answers (refuses) and ignores.
KEEPALIVE_ENV = "CHOPSTICKS_KEEPALIVE"


class SSHPipe:
    """A remote command's channel as a byte pipe: stdout and stderr by callbacks from the hub."""

    def __init__(self, link: "SSHLink", channel):
        self.link = link
        self.channel = channel
        self.name = link.name
        self.end_reason: Optional[str] = None
        self._callback: Optional[Callable[[bytes], None]] = None
        self._on_stderr: Optional[Callable[[bytes], None]] = None
        self._watcher = get_hub().loop.io(link.sock.fileno(), 1)
        self._keepalive: Optional[Any] = None  # a timer in the hub (gevent types it not): no greenlet per pipe
        self._heard = False  # from the server since the keepalive last looked
        self._silent = 0  # keepalive intervals in a row without a word from the server
        self._probing = False  # a keepalive request awaits its answer
        self._writing = False
        self._draining = False
        self._stdout_done = False
        self._stderr_done = False
        self._closed = False

    pid: Optional[int] = None  # no local process
    after_kill: Optional[Callable[[], None]] = None  # a killed session leaves nothing behind

    # -- reading -----------------------------------------------------------------------------

    def start_reading(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        self._callback, self._on_stderr = on_stdout, on_stderr
        self._watcher.start(self._readable)
        get_hub().loop.run_callback(self._drain)  # what libssh2 may already hold
        interval = self.link.dest.keepalive_interval
        if interval and self._keepalive is None:
            self._keepalive = get_hub().loop.timer(interval, interval)
            self._keepalive.start(self._keep_alive)

    def stop_reading(self) -> None:
        self._watcher.stop()

    def _end(self, reason: Optional[str]) -> None:
        if reason and self.end_reason is None:
            self.end_reason = reason
        if not self._stdout_done:
            self._stdout_done = True
            self._watcher.stop()
            if self._callback is not None:
                self._callback(b"")
        if not self._stderr_done:
            self._stderr_done = True
            if self._on_stderr is not None:
                self._on_stderr(b"")
        if self._keepalive is not None:
            self._keepalive.stop()

    # -- keepalive -------------------------------------------------------------------------

    def _readable(self) -> None:
        self._heard = True
        self._drain()

    def _keep_alive(self) -> None:
        """Every keepalive interval (a timer in the hub) of silence from the server, ask it for
        an answer, as OpenSSH's ServerAliveInterval does; after ``keepalive_count_max`` silent
        intervals in a row the host is gone: end the pipe, which fails every call on it."""
        if self._probing and not self._writing:
            self._probing = self._probe()  # collects the answer, so that libssh2 frees it
        if self._heard:
            self._heard, self._silent = False, 0
            return
        self._silent += 1
        dest = self.link.dest
        if self._silent >= dest.keepalive_count_max:
            self._end("no answer to keepalive in %d s (the host or the network went away)"
                      % (dest.keepalive_interval * dest.keepalive_count_max))
            try:
                self.link.sock.shutdown(socket.SHUT_RDWR)  # wakes a writer waiting on it
            except OSError:
                pass
            return
        if not self._probing and not self._writing:  # never between the halves of a packet being sent
            self._probing = self._probe()

    def _probe(self) -> bool:
        """Send, or drive, a request the server must answer; True while the answer is awaited.

        A channel request with want_reply (``env``, which sshd refuses once the command runs)
        rather than libssh2's keepalive@libssh2.org global request: libssh2 1.11 keeps every
        answer to those in its packet list for the session's lifetime (one per keepalive, a
        leak), while this answer is collected by the call that asked."""
        channel = self.channel
        if channel is None:
            return False
        try:
            pending = channel.setenv(KEEPALIVE_ENV, "1") == LIBSSH2_ERROR_EAGAIN
            answered = not pending
        except DENIED:  # refused: answered all the same
            pending, answered = False, True
        except SSH2Error:  # not answered; a lost connection shows on the socket
            pending, answered = False, False
        if answered:  # the answer may have been read inside the call: no readable socket told us
            self._heard = True
        if self._buffered():  # waiting for the answer may have read channel data
            self._drain()
        return pending

    def _drain(self) -> None:
        """Read everything libssh2 can give now, stdout and stderr, to their callbacks.

        ``channel.read`` first pulls every packet waiting on the socket into libssh2's
        buffer, so afterwards ``poll_channel_read`` (no syscall) tells exactly which stream
        still has data: reading one stream can pull the other's packets off the socket, and
        with the socket drained nothing would wake us for them. For the same reason a read
        that got data and left nothing buffered (and no EOF) ends the drain.
        """
        if self._draining or self._stdout_done or self.channel is None:
            return
        self._draining = True
        try:
            idle = 0
            while idle < 2:  # two passes without progress: never spin on a stuck buffer
                channel = self.channel
                size, data = channel.read(READ_SIZE)
                if size > 0:
                    idle = 0
                    if self._callback is not None:
                        self._callback(data)
                    if self.channel is None:
                        return
                    # libssh2's read took the socket's every packet: with none of them left
                    # for either stream, another read would only meet EAGAIN (a syscall)
                    if not self._buffered() and not channel.eof():
                        return
                    continue
                if size != LIBSSH2_ERROR_EAGAIN and channel.eof():
                    self._end(None)
                    return
                if channel.poll_channel_read(1):
                    esize, edata = channel.read_stderr(READ_SIZE)
                    if esize > 0:
                        idle = 0
                        if self._on_stderr is not None:
                            self._on_stderr(edata)
                        continue
                if not channel.poll_channel_read(0):
                    return
                idle += 1
        except SSH2Error as exc:
            self._end(reason(exc))
        finally:
            self._draining = False

    def _buffered(self) -> bool:
        """Whether libssh2 holds channel data (read from the socket by some other call)."""
        channel = self.channel
        return channel is not None and bool(channel.poll_channel_read(0) or channel.poll_channel_read(1))

    # -- writing -------------------------------------------------------------------------------

    def write(self, data) -> None:
        self._writing = True
        try:
            view = memoryview(data).cast("B")
            while view:
                view, directions = self._write_some(view)
                if not view:
                    break
                # waiting to read while our own packet sits unsent would deadlock both ends
                if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND:
                    gevent.socket.wait_write(self.link.sock.fileno())
                else:
                    gevent.socket.wait_read(self.link.sock.fileno())
        finally:
            self._writing = False
        if self._buffered():
            self._drain()

    def write_now(self, data) -> memoryview:
        self._writing = True
        try:
            view, _ = self._write_some(memoryview(data).cast("B"))
        finally:
            self._writing = False
        if self._buffered():
            self._drain()
        return view

    def _write_some(self, view: memoryview) -> Tuple[memoryview, int]:
        """Write until done or libssh2 answers EAGAIN; what is left, and the directions
        (``session.block_directions()``) to wait in before writing more."""
        while view:
            if self.channel is None or self._stdout_done:
                raise BrokenPipeError(errno.EPIPE, self.end_reason or "the SSH channel is closed")
            try:
                rc, written = self.channel.write(bytes(view[:WRITE_SLICE]))
            except SSH2Error as exc:  # the pipe's boundary: a writer sees a broken pipe, and why
                self._end(reason(exc))
                raise BrokenPipeError(errno.EPIPE, self.end_reason) from exc
            if written > 0:
                view = view[written:]
                self._heard = True  # past the first window, writes go out only as the server acks
            if rc == LIBSSH2_ERROR_EAGAIN:
                # Ask which way libssh2 is blocked before anything else touches the session:
                # a read in between (the drain) would overwrite the answer.
                directions = self.link.session.block_directions()
                if self._buffered():  # libssh2 reads the socket while writing: wake nobody else
                    self._drain()
                return view, directions
        return view, 0

    def close_stdin(self) -> None:
        if self.channel is not None and not self._stdout_done:
            try:
                retry(self.link.session, self.link.wire, Deadline(5.0, "sending EOF"), self.name,
                      self.channel.send_eof)
            except CLOSE_ERRORS as exc:  # the agent then ends when its channel closes
                self._closing_failed("send_eof", exc)

    # -- ending --------------------------------------------------------------------------------

    def exit_status(self, timeout: Optional[float] = None) -> Optional[int]:
        """The remote command's exit status (negative: killed by that signal), or None."""
        if self.channel is None:
            return None
        deadline = Deadline(timeout if timeout is not None else 30.0, "waiting for the exit status")
        try:
            retry(self.link.session, self.link.wire, deadline, self.name, self.channel.close)
            retry(self.link.session, self.link.wire, deadline, self.name, self.channel.wait_closed)
        except CLOSE_ERRORS as exc:  # no status to be had: the caller says what it knows instead
            self._closing_failed("exit_status", exc)
            return None
        _, signame, _, _ = self.channel.get_exit_signal()
        if signame:
            name = signame.decode("ascii", "replace") if isinstance(signame, bytes) else str(signame)
            try:
                return -signal.Signals["SIG" + name].value
            except KeyError:
                return None
        return self.channel.get_exit_status()

    def _closing_failed(self, step: str, exc: BaseException) -> None:
        logs.event("ssh_close_failed", host=self.name, step=step, error=describe(exc))

    def kill(self) -> None:
        """End the command: closing the session makes sshd hang up on it."""
        self._end("the tunnel was killed")
        try:
            self.link.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Free the channel, then the link (session, socket, hops), in that order."""
        if self._closed:
            return
        self._closed = True
        self._end(None)
        if self._keepalive is not None:
            self._keepalive.close()
        self._watcher.close()
        channel, self.channel = self.channel, None
        if channel is not None:
            try:
                channel.close()  # one non-blocking try; the session's disconnect follows
            except SSH2Error as exc:
                self._closing_failed("channel_close", exc)
            del channel  # freed before its session
        self.link.close()
