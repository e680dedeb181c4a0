"""Jump hosts shared by every tunnel through them: one login, a channel per far host. Transport layer.

Tunnels of one gevent hub whose chains reach the same jump host (the same resolved hops: host,
port, user, keys, host key policy) share one ``Bastion``: an authenticated session to it, opened once
(concurrent first connects wait for the one login, and share its failure), closed when its
last user closes. Each far host gets its own ``direct-tcpip`` channel, carried by a ``Bridge``
to one end of a socketpair on which the far host's own libssh2 session runs.

One greenlet per bastion (``Bastion._drive``) makes every libssh2 call on its session:
libssh2 opens one channel at a time per session, and any call may pull other channels'
packets off the socket, so a single driver that looks at every channel after each call is
what keeps data from sitting unseen. It sleeps until an event: the bastion's socket is
readable (or writable, when libssh2 waits to send), a far session wrote to its socketpair or
can take more, or a tunnel asked for a channel or gave one back. Nothing polls on a timer.

A bastion whose connection dies ends every tunnel through it, each saying which jump host
was lost.
"""

import collections
import dataclasses
import os
import weakref
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Set, Tuple

import gevent
import gevent.event
import gevent.socket
from gevent.hub import get_hub
from ssh2.error_codes import LIBSSH2_ERROR_EAGAIN
from ssh2.session import LIBSSH2_SESSION_BLOCK_OUTBOUND, Session

from chopsticks import logs
from chopsticks.errors import ConnectError, ConnectTimeout
from chopsticks.transports.libssh2 import (CHANNEL_ENDED, CHANNEL_REFUSED, READ_SIZE, SSH2Error, Deadline, describe,
                                           failure)
from chopsticks.transports.ssh_options import Destination

if TYPE_CHECKING:  # pragma: no cover
    from chopsticks.transports.ssh import SSHLink

Key = Tuple[Destination, ...]
# (libssh2.CHANNEL_ENDED: a channel that ended on its own; any other libssh2 error on the
# shared session means the session itself is gone.)
READ, WRITE = 1, 2  # libev's directions for an io watcher
# Passes over the channels per wake-up before the driver yields to the hub: a bound, so that a
# channel that keeps answering can never hold the hub.
MAX_PASSES = 8


def chain_key(chain: Tuple[Destination, ...]) -> Key:
    """What makes two chains the same bastion: every hop's resolved identity, not its spelling."""
    return tuple(dataclasses.replace(hop, name="", jumps=()) for hop in chain)


class Bastions:
    """The open bastions, by chain; a tunnel ``acquire``s one and its link releases it."""

    def __init__(self) -> None:
        self._open: Dict[Key, "Bastion"] = {}
        self._opening: Dict[Key, gevent.event.AsyncResult] = {}

    def acquire(self, chain: Tuple[Destination, ...], deadline: Deadline) -> "Bastion":
        """The shared session to ``chain[-1]`` through ``chain[:-1]``, opened if none is."""
        key = chain_key(chain)
        while True:
            bastion = self._open.get(key)
            if bastion is not None and bastion.lost is None:
                bastion.users += 1
                return bastion
            pending = self._opening.get(key)
            if pending is None:
                return self._login(key, chain, deadline)
            try:  # another tunnel is logging in: share its outcome
                pending.get(timeout=max(0.0, deadline.remaining()))
            except gevent.Timeout:
                raise ConnectTimeout("[%s] logging in to jump host %s did not finish within %ss" % (
                    chain[-1].name, chain[-1].hostname, deadline.seconds)) from None

    def _login(self, key: Key, chain: Tuple[Destination, ...], deadline: Deadline) -> "Bastion":
        from chopsticks.transports.ssh import SSHLink  # ssh imports this module
        done = self._opening[key] = gevent.event.AsyncResult()
        try:
            parent = self.acquire(chain[:-1], deadline) if len(chain) > 1 else None
            link = None
            try:
                link = SSHLink.open_hop(chain[-1], parent, deadline)
                bastion = Bastion(key, self, link)
            except BaseException:
                if link is not None:
                    link.close()  # logged in, not usable as a bastion: closing it releases the parent
                elif parent is not None:
                    parent.release()
                raise
            self._open[key] = bastion
        except BaseException as exc:
            done.set_exception(exc)
            raise
        finally:
            del self._opening[key]
        done.set(bastion)
        return bastion

    def forget(self, bastion: "Bastion") -> None:
        if self._open.get(bastion.key) is bastion:
            del self._open[bastion.key]

    def __len__(self) -> int:
        return len(self._open)


# Each hub's bastions: a bastion's session is driven by a greenlet of the hub that opened it,
# so tunnels of another thread's hub (the hub thread's, ``chopsticks.hub``) log in their own.
_shared: "weakref.WeakKeyDictionary[Any, Bastions]" = weakref.WeakKeyDictionary()


def default_bastions() -> Bastions:
    """The calling thread's hub's bastions, created on first use (not at import)."""
    hub = get_hub()
    bastions = _shared.get(hub)
    if bastions is None:
        bastions = _shared[hub] = Bastions()
    return bastions


class _Open:
    """A tunnel's request for a channel to ``dest``, answered by the driver."""

    def __init__(self, dest: Destination):
        self.dest = dest
        self.result = gevent.event.AsyncResult()
        self.abandoned = False  # its tunnel gave up waiting: the driver closes what comes


class Bastion:
    """One authenticated session to a jump host, its channels driven by one greenlet."""

    def __init__(self, key: Key, pool: Bastions, link: "SSHLink"):
        self.key = key
        self.pool = pool
        self.link = link  # its session only through it: freed with the link, before its socket
        self.dest = link.dest
        self.users = 1
        self.lost: Optional[str] = None  # why the session died, once it has
        self.bridges: Set["Bridge"] = set()
        self.pushing: Set["Bridge"] = set()  # far sessions with bytes for their channel
        self.closing: List[object] = []  # channels given back whose close libssh2 has not finished
        self._opening: Deque[_Open] = collections.deque()
        self._wake = gevent.event.Event()
        link.wire.end_relay()  # the driver watches the connection itself
        loop = get_hub().loop
        self._readable = loop.io(link.sock.fileno(), READ)
        self._writable = loop.io(link.sock.fileno(), WRITE)
        self._readable.start(self._wake.set)
        self._driver = gevent.spawn(self._drive)

    @property
    def session(self) -> Session:
        session = self.link.session
        assert session is not None, "a released bastion has no session"
        return session

    def describe(self) -> str:
        return "jump host %s port %d" % (self.dest.hostname, self.dest.port)

    # -- what tunnels ask ------------------------------------------------------------------

    def connect(self, dest: Destination, deadline: Deadline) -> "Bridge":
        """A channel to ``dest`` through this bastion, bridged to a socketpair."""
        step = "asking jump host %s to connect to %s port %d" % (self.dest.hostname, dest.hostname, dest.port)
        if self.lost is not None:
            raise ConnectError("[%s] %s failed: %s" % (dest.name, step, self.lost))
        request = _Open(dest)
        self._opening.append(request)
        self.wake()
        try:
            channel = request.result.get(timeout=max(0.0, deadline.remaining()))
        except gevent.Timeout:
            request.abandoned = True
            raise ConnectTimeout("[%s] %s did not finish within %ss" % (dest.name, step, deadline.seconds)) from None
        except SSH2Error as exc:
            raise failure(dest.name, step, exc) from exc
        except ConnectionError as exc:
            raise ConnectError("[%s] %s failed: %s" % (dest.name, step, exc)) from exc
        return Bridge(self, channel)

    def release(self) -> None:
        """One user fewer; the last one closes the session (and the hops it runs through)."""
        self.users -= 1
        if self.users > 0:
            return
        self.pool.forget(self)
        self._readable.close()
        self._writable.close()
        if self._driver is not gevent.getcurrent():
            self._driver.kill()
        self.closing.clear()  # channels are freed before their session
        self.link.close()

    # -- the driver --------------------------------------------------------------------------

    def _drive(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                self._service()
                if self._wake.is_set():
                    gevent.sleep(0)  # more is ready: let the hub run first
        except SSH2Error as exc:
            self._die(describe(exc))
        except OSError as exc:
            self._die(str(exc))
        except Exception as exc:  # a bug of ours: the tunnels end saying so rather than hang
            self._die("chopsticks failed driving its session: %r; please report this bug" % (exc,))
            raise

    def _service(self) -> None:
        """Make every call that can progress, until a pass over the channels sees nothing new."""
        called = self._open_next()
        called = self._close_given_back() or called
        pumped, again = self._pass(pump=True)
        if not pumped and not called:
            # nothing could read the socket (no channel, or every far session is full): stop
            # watching it until something else wakes us, or the hub would spin on it
            self._readable.stop()
        for _ in range(MAX_PASSES):
            if not again:
                break
            _, again = self._pass(pump=False)
        else:
            self._wake.set()
        if self.session.block_directions() & LIBSSH2_SESSION_BLOCK_OUTBOUND:
            self._writable.start(self._wake.set)
        else:
            self._writable.stop()

    def _pass(self, pump: bool) -> Tuple[bool, bool]:
        """One look at every channel: (whether the socket was read, whether a channel looked at
        before a call may have packets that call pulled off the socket: pass again).

        With ``pump``, the first channel that can take data is read without asking libssh2
        first, which pulls every packet waiting on the socket into libssh2's buffer; the
        channels after it are only asked (``poll_channel_read``, no syscall) and read if they
        have data. So a quiet wake-up costs one read and one question per channel."""
        pumped = again = False
        for bridge in list(self.bridges):
            if bridge.pull(poll_first=not pump):
                if pump:
                    pump, pumped = False, True
                else:
                    again = True
        if not self.session.block_directions() & LIBSSH2_SESSION_BLOCK_OUTBOUND:
            for bridge in list(self.pushing):
                again = bridge.push() or again
        return pumped or again, again

    def _open_next(self) -> bool:
        called = False
        while self._opening:
            request = self._opening[0]
            dest = request.dest
            called = True
            try:
                channel = self.session.direct_tcpip_ex(dest.hostname, dest.port, "127.0.0.1", 0)
            except CHANNEL_REFUSED as exc:
                self._opening.popleft()
                request.result.set_exception(exc)
                continue
            if channel == LIBSSH2_ERROR_EAGAIN or (channel is None and self.session.last_errno() == LIBSSH2_ERROR_EAGAIN):
                return called
            self._opening.popleft()
            if request.abandoned:
                self.closing.append(channel)
            else:
                request.result.set(channel)
        return called

    def _close_given_back(self) -> bool:
        """Close the channels tunnels gave back; the far host's sshd learns its client left."""
        still = []
        for channel in self.closing:
            try:
                if channel.close() == LIBSSH2_ERROR_EAGAIN:  # type: ignore[attr-defined]
                    still.append(channel)
            except CHANNEL_ENDED:  # closed already from the far side
                pass
        called = bool(self.closing)
        self.closing = still
        return called

    def _die(self, why: str) -> None:
        """The session is gone: end every tunnel through it, saying which jump host was lost."""
        self.lost = "the connection to %s was lost (%s)" % (self.describe(), why)
        logs.event("ssh_jump_host_lost", host=self.dest.name, reason=self.lost)
        self.pool.forget(self)
        self._readable.stop()
        self._writable.stop()
        while self._opening:
            self._opening.popleft().result.set_exception(ConnectionError(self.lost))
        for bridge in list(self.bridges):
            bridge.end(self.lost)

    def wake(self) -> None:
        """Something changed outside the socket: serve it, and watch the socket again."""
        if self.lost is None:
            self._readable.start(self._wake.set)
            self._wake.set()

    def want_push(self, bridge: "Bridge") -> None:
        self.pushing.add(bridge)
        self.wake()


class Bridge:
    """A far host's direct-tcpip channel, carried to and from a socketpair by its bastion."""

    def __init__(self, bastion: Bastion, channel):
        self.bastion = bastion
        self.channel = channel
        self.near, self.far = gevent.socket.socketpair()  # near: the next session's socket
        self.far_fd = self.far.fileno()
        self.to_far = b""  # read from the channel, not yet taken by the far session
        self.to_channel = b""  # read from the far session, not yet taken by the channel
        self.lost: Optional[str] = None  # set when the bastion's session died under us
        self.link: Optional["SSHLink"] = None  # the far host's link, once it runs on ``near``
        self.ended = False
        loop = get_hub().loop
        self._far_readable = loop.io(self.far_fd, READ)
        self._far_writable = loop.io(self.far_fd, WRITE)
        self._far_readable.start(self._readable)
        bastion.bridges.add(self)

    def _readable(self) -> None:
        self._far_readable.stop()
        self.bastion.want_push(self)

    def pull(self, poll_first: bool) -> bool:
        """Channel to far session; True if a call that reads the socket was made."""
        if self.ended or (self.to_far and not self._flush()):
            return False
        called = False
        channel = self.channel
        while True:
            if poll_first and not channel.poll_channel_read(0):
                if channel.eof():
                    self.end(None)
                return called
            try:
                size, data = channel.read(READ_SIZE)
            except CHANNEL_ENDED:
                self.end(None)
                return True
            called = poll_first = True
            if size <= 0:
                if size != LIBSSH2_ERROR_EAGAIN and channel.eof():
                    self.end(None)
                return called
            self.to_far = data
            if not self._flush():
                return called

    def _flush(self) -> bool:
        """Hand the far session what the channel gave; False if it cannot take it all now."""
        try:
            sent = os.write(self.far_fd, self.to_far)
        except BlockingIOError:
            sent = 0
        except OSError:  # the far session closed its end: its link is closing
            self.to_far = b""
            return True
        self.to_far = self.to_far[sent:]
        if self.to_far:
            self._far_writable.start(self.bastion.wake)
            return False
        self._far_writable.stop()
        return True

    def push(self) -> bool:
        """Far session to channel; True if a libssh2 call was made."""
        called = False
        while not self.ended:
            if not self.to_channel:
                try:
                    data = os.read(self.far_fd, READ_SIZE)
                except BlockingIOError:
                    self.bastion.pushing.discard(self)
                    self._far_readable.start(self._readable)
                    return called
                except OSError:
                    data = b""
                if not data:  # the far session closed: its link releases the channel
                    self.bastion.pushing.discard(self)
                    return called
                self.to_channel = data
            if not self.channel.window_write():
                return called  # the window adjust wakes us when it comes
            try:
                rc, written = self.channel.write(self.to_channel)
            except CHANNEL_ENDED:
                self.end(None)
                return True
            called = True
            self.to_channel = self.to_channel[max(0, written):]
            if rc == LIBSSH2_ERROR_EAGAIN and self.to_channel:
                return called
        return called

    def end(self, lost: Optional[str]) -> None:
        """The channel or the bastion ended: the far session sees its socket close."""
        if lost is not None and self.lost is None:
            self.lost = lost
            if self.link is not None:
                self.link.lose(lost)
        if self.ended:
            return
        self.ended = True
        self._far_readable.stop()
        self._far_writable.stop()
        self.bastion.pushing.discard(self)
        self.bastion.bridges.discard(self)
        try:  # the descriptor is not touched again: its number may be reused at once
            self.far.close()
        except OSError:
            pass

    def close(self) -> None:
        """The far session is closed: give the channel back (its link releases the bastion)."""
        bastion = self.bastion
        self.end(None)
        self._far_readable.close()
        self._far_writable.close()
        self.link = None
        channel, self.channel = self.channel, None
        if channel is not None and bastion.lost is None:
            bastion.closing.append(channel)
            bastion.wake()
        del channel
