"""An in-memory pipe pair: a ``Pipe`` whose agent end is driven by the caller. Transport layer.

For tests of the protocol logic above the transports (``connection.Connection``) only: no
process, no socket, no agent. ``memory_pair()`` returns the pipe, to hand to a
``Connection``, and its ``FarEnd``, which plays the agent: it sends frames (or raw bytes),
stderr lines and an exit, and decodes what the controller wrote. Everything a real agent
would do on its own (bootstrapping, answering calls) the test does by hand. The two ends
share one ``Streams``: each drives it through its methods, neither touches the other.
"""

import errno
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from chopsticks.wire import protocol

if TYPE_CHECKING:
    from chopsticks.transports import Pipe


class Streams:
    """The agent's stdin, stdout and stderr between the two ends, and how the agent ended."""

    def __init__(self) -> None:
        self.stdin = bytearray()  # everything the controller wrote
        self.stdin_closed = False
        self.reader: Optional[Callable[[bytes], None]] = None  # the controller's stdout callback
        self.stderr_reader: Optional[Callable[[bytes], None]] = None  # and its stderr callback
        self.status: Optional[int] = None
        self.end_reason: Optional[str] = None
        self.ended = False

    def stdout(self, data: bytes) -> None:
        """Deliver ``data`` on the agent's stdout (``b""``: its end) to the reader, if one reads."""
        if self.reader is not None:
            self.reader(data)

    def stderr(self, data: bytes) -> None:
        """Deliver ``data`` on the agent's stderr (``b""``: its end) to the reader, if one reads."""
        if self.stderr_reader is not None:
            self.stderr_reader(data)

    def end(self, status: Optional[int], reason: Optional[str]) -> None:
        """The agent ends (once): stdout and stderr close, with this status and transport account."""
        if self.ended:
            return
        self.ended = True
        self.status = status
        self.end_reason = reason
        self.stderr(b"")
        self.stdout(b"")


class MemoryPipe:
    """The controller's end: what ``Connection`` drives."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self.pid: Optional[int] = None
        self.after_kill: Optional[Callable[[], None]] = None
        self.killed = False

    @property
    def end_reason(self) -> Optional[str]:
        return self.streams.end_reason

    def start_reading(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        self.streams.reader = on_stdout
        self.streams.stderr_reader = on_stderr

    def stop_reading(self) -> None:
        self.streams.reader = None

    def write(self, data: bytes) -> None:
        streams = self.streams
        if streams.stdin_closed or streams.ended:
            raise BrokenPipeError(errno.EPIPE, streams.end_reason or "the agent's stdin is closed")
        streams.stdin += data

    def write_now(self, data) -> memoryview:
        self.write(data)
        return memoryview(b"")

    def close_stdin(self) -> None:
        """End-of-file to the agent, which exits then, as a real agent does."""
        streams = self.streams
        streams.stdin_closed = True
        streams.end(0 if streams.status is None else streams.status, streams.end_reason)

    def exit_status(self, timeout: Optional[float] = None) -> Optional[int]:
        return self.streams.status

    def kill(self) -> None:
        self.killed = True
        self.streams.end(-9, self.streams.end_reason)

    def close(self) -> None:
        self.streams.end(self.streams.status, self.streams.end_reason)


class FarEnd:
    """The agent's end of a ``MemoryPipe``, driven by the test."""

    def __init__(self, streams: Streams) -> None:
        self.streams = streams
        self._decoder = protocol.Decoder()
        self._read = 0

    def send_bytes(self, data: bytes) -> None:
        """Deliver ``data`` on the agent's stdout, as one chunk."""
        self.streams.stdout(data)

    def send(self, kind: int, req_id: int, payload: bytes = b"") -> None:
        """Deliver one message on the agent's stdout."""
        self.send_bytes(b"".join(protocol.encode(kind, req_id, payload)))

    def send_stderr(self, data: bytes) -> None:
        self.streams.stderr(data)

    def exit(self, status: Optional[int], reason: Optional[str] = None) -> None:
        """The agent ends: stdout and stderr close, with this exit status (and transport account)."""
        self.streams.end(status, reason)

    def received(self) -> List[Tuple[int, int, bytes]]:
        """The frames the controller wrote since the last look, as ``(kind, req_id, payload)``."""
        stdin = self.streams.stdin
        data = bytes(stdin[self._read:])
        self._read = len(stdin)
        return [(frame.kind, frame.req_id, bytes(frame.payload)) for frame in self._decoder.feed(data)]


def memory_pair() -> Tuple[MemoryPipe, FarEnd]:
    """A pipe for a ``Connection`` and the end a test drives as the agent."""
    streams = Streams()
    return MemoryPipe(streams), FarEnd(streams)


if TYPE_CHECKING:
    # mypy checks here that the in-memory pipe is a Pipe, as it does for the real ones where
    # their tunnels return them; nothing of this runs.
    _: Pipe = MemoryPipe(Streams())
