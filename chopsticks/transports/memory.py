"""An in-memory pipe pair: a ``Pipe`` whose agent end is driven by the caller. Transport layer.

For tests of the protocol logic above the transports (``connection.Connection``) only: no
process, no socket, no agent. ``memory_pair()`` returns the pipe, to hand to a
``Connection``, and its ``FarEnd``, which plays the agent: it sends frames (or raw bytes),
stderr lines and an exit, and decodes what the controller wrote. Everything a real agent
would do on its own (bootstrapping, answering calls) the test does by hand.
"""

import errno
from typing import Callable, List, Optional, Tuple

import gevent.queue

from chopsticks.transports import Pipe
from chopsticks.wire import protocol


class MemoryPipe:
    """The controller's end: what ``Connection`` drives."""

    def __init__(self) -> None:
        self.end_reason: Optional[str] = None
        self.pid: Optional[int] = None
        self.after_kill: Optional[Callable[[], None]] = None
        self.written = bytearray()  # everything written to the agent's stdin
        self.stdin_closed = False
        self.killed = False
        self.status: Optional[int] = None
        self._callback: Optional[Callable[[bytes], None]] = None
        self._stderr: gevent.queue.Queue = gevent.queue.Queue()
        self._ended = False

    def start_reading(self, callback: Callable[[bytes], None]) -> None:
        self._callback = callback

    def stop_reading(self) -> None:
        self._callback = None

    def read_stderr(self, size: int) -> bytes:
        return self._stderr.get()

    def write(self, data: bytes) -> None:
        if self.stdin_closed or self._ended:
            raise BrokenPipeError(errno.EPIPE, self.end_reason or "the agent's stdin is closed")
        self.written += data

    def close_stdin(self) -> None:
        """End-of-file to the agent, which exits then, as a real agent does."""
        self.stdin_closed = True
        self._end(0 if self.status is None else self.status, self.end_reason)

    def exit_status(self, timeout: Optional[float] = None) -> Optional[int]:
        return self.status

    def kill(self) -> None:
        self.killed = True
        self._end(-9, self.end_reason)

    def close(self) -> None:
        self._end(self.status, self.end_reason)

    def _end(self, status: Optional[int], reason: Optional[str]) -> None:
        if self._ended:
            return
        self._ended = True
        self.status = status
        self.end_reason = reason
        self._stderr.put(b"")
        if self._callback is not None:
            self._callback(b"")


class FarEnd:
    """The agent's end of a ``MemoryPipe``, driven by the test."""

    def __init__(self, pipe: MemoryPipe) -> None:
        self.pipe = pipe
        self._decoder = protocol.Decoder()
        self._read = 0

    def send_bytes(self, data: bytes) -> None:
        """Deliver ``data`` on the agent's stdout, as one chunk."""
        callback = self.pipe._callback
        if callback is not None:
            callback(data)

    def send(self, kind: int, req_id: int, payload: bytes = b"") -> None:
        """Deliver one message on the agent's stdout."""
        self.send_bytes(b"".join(protocol.encode(kind, req_id, payload)))

    def send_stderr(self, data: bytes) -> None:
        self.pipe._stderr.put(data)

    def exit(self, status: Optional[int], reason: Optional[str] = None) -> None:
        """The agent ends: stdout and stderr close, with this exit status (and transport account)."""
        self.pipe._end(status, reason)

    def received(self) -> List[Tuple[int, int, bytes]]:
        """The frames the controller wrote since the last look, as ``(kind, req_id, payload)``."""
        data = bytes(self.pipe.written[self._read:])
        self._read = len(self.pipe.written)
        return [(frame.kind, frame.req_id, bytes(frame.payload)) for frame in self._decoder.feed(data)]


def memory_pair() -> Tuple[MemoryPipe, FarEnd]:
    """A pipe for a ``Connection`` and the end a test drives as the agent."""
    pipe = MemoryPipe()
    return pipe, FarEnd(pipe)


# mypy checks here that the in-memory pipe is a Pipe, as it does for the real ones where
# their tunnels return them.
_IS_A_PIPE: Callable[[], Pipe] = MemoryPipe
