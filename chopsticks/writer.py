"""Frames out to one agent: one write lock, and a tunnel broken by a torn frame. Controller core.

A ``FrameWriter`` is the writing half of a ``connection.Connection``. Writers share its lock,
taken per frame, so other messages interleave with a large one. ``send`` writes without
waiting: a lone one-frame message (a warm call) goes at once, as far as the pipe takes it,
and the rest of it goes on from a greenlet that holds the lock. A write interrupted mid-frame
(a call's timeout, a kill) leaves the stream corrupt, so ``on_torn`` is called once: the
connection then closes.
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple

import gevent
import gevent.lock

from chopsticks.transports import Pipe
from chopsticks.wire import protocol

# Why a tunnel is closed after a write to it was stopped halfway through a frame.
TORN_FRAME = "a write to the agent was interrupted mid-frame (the agent stopped reading?)"

Message = Tuple[int, int, bytes]  # (kind, request id, payload)


class FrameWriter:
    """Writes frames to ``pipe``; ``on_torn(reason)`` once a frame was torn."""

    def __init__(self, pipe: Pipe, on_torn: Callable[[str], None]):
        self.pipe = pipe
        self.lock = gevent.lock.Semaphore()
        self.on_torn = on_torn

    def write(self, kind: int, req_id: int, payload=b"") -> None:
        """Write one message, waiting as the pipe needs; OSError once the pipe ended."""
        for frame in protocol.frames(kind, req_id, payload):
            with self.lock:  # per frame: other messages interleave with a large one
                self._write_held(frame)

    def send(self, messages: List[Message]) -> Optional[gevent.Greenlet]:
        """Write ``messages`` in order without waiting. A lone one-frame message goes at once,
        as far as the pipe takes it; the rest of it, or all of them when the lock is held or
        a message spans frames, go from a greenlet, which is returned (None: all written, or
        the pipe ended: the reader fails the calls)."""
        frames = protocol.frames(*messages[0]) if len(messages) == 1 else []
        if len(frames) != 1 or not self.lock.acquire(blocking=False):
            return gevent.spawn(self._write_all, messages)
        left = list(frames[0])
        try:
            while left:
                rest = self.pipe.write_now(left[0])
                if rest:
                    left[0] = rest
                    writer = gevent.spawn(self._finish_frame, left)
                    writer.link(self._frame_finished)  # the lock goes with it
                    return writer
                left.pop(0)
        except OSError:
            pass
        self.lock.release()
        return None

    def _write_held(self, frame: Sequence[Any]) -> None:
        """Write one frame's buffers, the lock held."""
        try:
            for buf in frame:
                self.pipe.write(buf)
        except OSError:
            raise
        except BaseException:
            self.on_torn(TORN_FRAME)
            raise

    def _write_all(self, messages: List[Message]) -> None:
        try:
            for message in messages:
                self.write(*message)
        except OSError:
            pass  # the reader fails the calls with the reason the pipe ended

    def _finish_frame(self, rest: List[Any]) -> None:
        """The rest of a frame begun by ``send``, which handed us the lock."""
        try:
            self._write_held(rest)
        except OSError:
            pass

    def _frame_finished(self, writer: gevent.Greenlet) -> None:
        """After ``_finish_frame``, however it ended (killed before it started included)."""
        self.lock.release()
        if not writer.successful() or isinstance(writer.value, gevent.GreenletExit):
            self.on_torn(TORN_FRAME)
