"""Shards as local processes: the driver's backend, and the shard's main loop. Controller-side.

A shard is ``python -c BOOT`` (``main`` below; ``python -m chopsticks.shards`` runs it too)
started with ``subprocess`` (not multiprocessing's
spawn, which imports the user's ``__main__`` again and runs an unguarded script twice; not a
fork, which would share libssh2's state). Driver and shard talk over the shard's stdin and
stdout in frames: a 4-byte big-endian length, then a pickle. Both ends are our own processes
(the driver started the shard), and remote bytes never cross unread; still, the driver
unpickles what a shard sends into a result's types only (``results.loads_result``): a shard
that sends anything else is lost, and nothing of it is built.

    driver -> shard:  ("spec", ShardSpec)       first, once
                      ("run", run_id, RunOrder)
                      ("cancel", run_id)
                      ("answer", ask_id, ok, value)
    shard -> driver:  what ``core.ShardSide`` sends (events, questions, log events)

The shard exits when its stdin ends: a driver that exits or is killed leaves no shard
behind. The shard's own stdout is kept for frames; anything printed goes to its stderr.
"""

import os
import pickle
import signal
import struct
import sys
from typing import Any, Callable, Dict, List, Optional

import gevent
import gevent.lock
import gevent.os
import gevent.queue
import gevent.subprocess

from chopsticks.errors import SerializationError
from chopsticks.results import ErrorResult, loads_result
from chopsticks.shards.core import RunOrder, ShardSide, ShardSpec, answer_for, deliver

LENGTH = struct.Struct("!I")
# How long a shard has to close its tunnels and exit once its stdin ended, before the
# driver kills it.
CLOSE_GRACE = 10.0
READ_SIZE = 1 << 16


def pickled(message: Any, unsendable: Callable[[Any, Exception], Any] = lambda message, exc: None) -> bytes:
    """``message`` pickled; one that does not pickle as ``unsendable(message, exc)`` instead
    (None: raise). What a shard sends its driver, whatever carries it (``unsendable_result``)."""
    try:
        return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # whatever an arbitrary value's pickling raises
        replacement = unsendable(message, exc)
        if replacement is None:
            raise
        return pickle.dumps(replacement, pickle.HIGHEST_PROTOCOL)


class Frames:
    """Length-prefixed pickles over two non-blocking fds, cooperatively (one writer at a time).
    ``loads`` unpickles what is read: the driver reads a shard's messages into a result's types
    only (``results.loads_result``); a shard trusts its driver (``pickle.loads``)."""

    def __init__(self, read_fd: int, write_fd: int, loads: Callable[[bytes], Any] = pickle.loads):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.loads = loads
        gevent.os.make_nonblocking(read_fd)
        gevent.os.make_nonblocking(write_fd)
        self._lock = gevent.lock.Semaphore()
        self._buffer = bytearray()

    def _fill(self, size: int) -> bool:
        """At least ``size`` bytes in the buffer (read in large chunks: results that land
        together arrive in one read); False at the end of the stream."""
        while len(self._buffer) < size:
            chunk = gevent.os.nb_read(self.read_fd, max(READ_SIZE, size - len(self._buffer)))
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def read(self) -> Any:
        """The next message; None at the end of the stream."""
        if not self._fill(LENGTH.size):
            return None
        size = LENGTH.size + LENGTH.unpack_from(self._buffer)[0]
        if not self._fill(size):
            return None
        body = bytes(self._buffer[LENGTH.size:size])
        del self._buffer[:size]
        return self.loads(body)

    def write(self, message: Any) -> None:
        """Send ``message``; whatever pickling raises, it raises before anything is sent."""
        self.write_many([message])

    def write_many(self, messages: List[Any],
                   unsendable: Callable[[Any, Exception], Any] = lambda message, exc: None) -> None:
        """Send ``messages`` in one write; one that does not pickle is sent as
        ``unsendable(message, exc)`` instead (None: raise, before anything is sent)."""
        chunks = []
        for message in messages:
            data = pickled(message, unsendable)
            chunks += [LENGTH.pack(len(data)), data]
        view = memoryview(b"".join(chunks))
        with self._lock:
            if self.write_fd < 0:
                raise BrokenPipeError("the frames' writing end is closed")
            while view:
                view = view[gevent.os.nb_write(self.write_fd, view):]

    def close_writing(self, close: Callable[[], None]) -> None:
        """Close the writing end with ``close``, once no write is under way (a write going on
        after would reach whatever file the descriptor's number is given to next)."""
        with self._lock:
            self.write_fd = -1
            close()


# -- the driver's side ------------------------------------------------------------------------

# The shard's command: this chopsticks first on its path, and not the driver's working directory
# (``-m`` or ``-c`` would put it first: a ``gevent.py`` or ``chopsticks/`` there would shadow
# ours). The driver's own sys.path is not passed on: a shard needs no user code, the driver
# serves it.
BOOT = "import sys; sys.path[0] = sys.argv[1]; from chopsticks.shards.process import main; main()"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _why(status: Optional[int]) -> str:
    if status is None:
        return "its pipe broke"
    if status < 0:
        return "it was killed by signal %d (%s)" % (-status, signal.Signals(-status).name)
    return "it exited with status %d" % status


class ProcessShard:
    """The driver's handle on one shard process (see ``driver.py`` for the seam)."""

    def __init__(self, spec: ShardSpec, sink: Any):
        self.sink = sink
        self.closing = False
        self.proc = gevent.subprocess.Popen([sys.executable, "-c", BOOT, ROOT], stdin=gevent.subprocess.PIPE,
                                            stdout=gevent.subprocess.PIPE)
        self.pid = self.proc.pid
        self.label = "%s (pid %d on this machine)" % (spec.label, self.pid)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.frames = Frames(self.proc.stdout.fileno(), self.proc.stdin.fileno(), loads_result)
        self.frames.write(("spec", spec))
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        unreadable = None
        try:
            while True:
                message = self.frames.read()
                if message is None:
                    break
                deliver(self.sink, message, self._answer)
        except (OSError, EOFError):
            pass
        except Exception as exc:  # a message not of a result's types (it does not unpickle here), or a bug
            self.proc.kill()
            unreadable = "its messages could not be read: %r" % (exc,)
        status = self.proc.wait()
        if not self.closing:  # lost: nobody will close it, so its pipes are released here
            self._release()
        self.sink.lost("it was closed" if self.closing else unreadable or _why(status))

    def _release(self) -> None:
        """Close both pipes (each close is safe to repeat)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.frames.close_writing(self.proc.stdin.close)
        self.proc.stdout.close()

    def _answer(self, ask_id: int, kind: str, key: Any) -> None:  # in the reader greenlet
        self._send(("answer", ask_id) + answer_for(self.sink.answer, kind, key))

    def _send(self, message: Any) -> None:
        if self.closing:
            raise BrokenPipeError("%s is closed" % self.label)
        self.frames.write(message)

    def run(self, run_id: int, order: RunOrder) -> None:
        self._send(("run", run_id, order))

    def cancel(self, run_id: int) -> None:
        try:
            self._send(("cancel", run_id))
        except OSError:
            pass  # gone: its reader reports it

    def close(self) -> None:
        self.closing = True
        assert self.proc.stdin is not None
        self.frames.close_writing(self.proc.stdin.close)  # end of stdin: the shard closes its tunnels and exits
        try:
            self.proc.wait(timeout=CLOSE_GRACE)
        except gevent.subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join()
        self._release()


class ProcessBackend:
    """Shards as local processes."""

    local_files = True  # this machine's
    def start(self, spec: ShardSpec, sink: Any) -> ProcessShard:
        return ProcessShard(spec, sink)

    def cores(self) -> Optional[int]:
        return None  # this machine's


# -- the shard's side -------------------------------------------------------------------------

def unsendable_result(message: Any, exc: Exception) -> Any:
    """A result whose value does not pickle, as that host's SerializationError."""
    run_id, event = message[1], message[2]
    if message[0] != "event" or event[0] != "result":
        return None
    error = SerializationError("[%s] the result cannot be sent from its shard: %s" % (event[1], exc))
    return ("event", run_id, ("result", event[1], ErrorResult.from_exception(error)))


def _drain(outbox: gevent.queue.Queue, frames: Frames) -> None:
    """Send what is queued, everything queued by then in one write (results that land in one
    turn of the hub cost one syscall here and one read in the driver)."""
    for message in outbox:
        batch = [message]
        while not outbox.empty():
            batch.append(outbox.get_nowait())
        try:
            frames.write_many(batch, unsendable_result)
        except OSError:
            return  # the driver is gone: the shard's stdin ends too, and main() closes the rest
        except Exception as exc:  # a message that is not a result and does not pickle: a bug, said, not a hang
            os.write(2, ("chopsticks shard: cannot send %r: %r\n" % (batch[0][:2], exc)).encode())
            os._exit(70)


def main() -> None:
    """A shard: read the spec, then run orders until stdin ends."""
    # Ctrl-C on a terminal reaches the whole process group: the driver decides what it stops
    # (it cancels the runs and closes the shards); a shard that died of it would fail its hosts.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    frames = Frames(0, os.dup(1))
    os.dup2(2, 1)  # what the shard prints must not land among the frames
    first = frames.read()
    if first is None:
        return
    # Everything for the driver goes through one queue (a put never waits, so a log event from
    # one of the hub's callbacks can be sent too) and one writer.
    outbox: gevent.queue.Queue = gevent.queue.Queue()
    side = ShardSide(first[1], outbox.put)
    writer = gevent.spawn(_drain, outbox, frames)
    handlers: Dict[str, Callable[..., None]] = {"run": side.run, "cancel": side.cancel, "answer": side.answer}
    try:
        while True:
            message = frames.read()
            if message is None:
                break
            handlers[message[0]](*message[1:])
    finally:
        side.close(CLOSE_GRACE)
        writer.kill()
