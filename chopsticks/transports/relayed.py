"""A pipe through another agent: the command runs on that agent's host. Transport layer.

``via=`` tunnels (``Docker('app', via=tun)``) reach their agent this way: the intermediate
agent runs ``agent.relay.run`` with the command, and three file streams of its connection
carry the command's stdin, stdout and stderr (see that module). To the far agent's
``Connection`` this is a pipe like any other; it never learns how many hops lie between.
The intermediate's credit bounds what is in flight each way.
"""

from typing import Callable, List, Optional

import msgpack

from chopsticks.agent import relay as remote_relay
from chopsticks.connection import Connection, StreamState
from chopsticks.errors import RemoteException
from chopsticks.future import CallFuture
from chopsticks.jobs import Call
from chopsticks.wire import protocol

# How long the command may take to exit after its stdin closes before it is killed (as a
# local child's, ``transports.process.EXIT_GRACE``).
EXIT_GRACE = 2.0
# The largest exit status a process can have (signal numbers are smaller): what the
# intermediate says beyond it is no status (an int of thousands of digits would not print).
MAX_STATUS = 255


class RelayPipe:
    """stdin, stdout and stderr of ``argv``, run by the agent of ``via`` (a connection)."""

    pid = None
    after_kill = None

    def __init__(self, via: Connection, argv: List[str]):
        self._via = via
        self._stdin, self._stdout, self._stderr = (via.open_stream() for _ in range(3))
        call = Call.of(remote_relay.run, (argv, self._stdin.sid, self._stdout.sid, self._stderr.sid))
        self._run: CallFuture = via.submit(call.payload, call.module, call.kind)
        self._run.add_done_callback(self._ended)
        self._stdin_closed = False
        self._readers: List[Optional[Callable[[bytes], None]]] = [None, None]

    @property
    def via(self) -> Connection:
        """The intermediate's connection, which carries this pipe."""
        return self._via

    @property
    def stdin_stream(self) -> StreamState:
        """The command's stdin, a stream of the intermediate's connection: a push through
        relays (``chopsticks.relay_put``) spends its credit for the chunks the intermediate
        writes there itself."""
        return self._stdin

    # -- reading ---------------------------------------------------------------------------

    def start_reading(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        self._readers = [on_stdout, on_stderr]
        for index, state in enumerate((self._stdout, self._stderr)):
            state.on_data = self._reader(state, index)
            while state.chunks:  # anything that came before (nothing switched since the start)
                state.on_data(state.chunks.popleft())

    def _reader(self, state: StreamState, index: int) -> Callable[[bytes], None]:
        def on_data(data: bytes) -> None:  # in the hub
            deliver = self._readers[index]
            if deliver is not None:
                deliver(data)
            self._via.stream_credit(state, len(data), wait=False)
        return on_data

    def stop_reading(self) -> None:
        self._readers[0] = None  # later output is credited and dropped, so the relay finishes

    def _ended(self, _run: CallFuture) -> None:
        """The relay returned (or its tunnel ended): both outputs end, after all their data."""
        for index in (0, 1):
            deliver, self._readers[index] = self._readers[index], None
            if deliver is not None:
                deliver(b"")

    @property
    def end_reason(self) -> Optional[str]:
        error = self._run.exception()
        if error is None:
            return None
        if isinstance(error, RemoteException):  # the relay itself failed: the command did not start
            return "%s could not run it (%s: %s)" % (self._via.name, error.remote_type.rsplit(".", 1)[-1],
                                                      error.remote_message)
        return "the tunnel through %s ended (%s)" % (self._via.name, error)

    # -- writing ---------------------------------------------------------------------------

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        state = self._stdin
        while view:
            if self._stdin_closed or self._run.done() or state.error is not None:
                raise BrokenPipeError("the relayed pipe through %s ended" % self._via.name)
            size = min(len(view), protocol.STREAM_CHUNK, state.window.credit)
            if not size:
                state.wake.clear()
                state.wake.wait()
                continue
            self._via.stream_send(state, view[:size])
            view = view[size:]

    def write_now(self, data) -> memoryview:
        """Nothing at once: every write goes in order through ``write``, from the far
        connection's writer, which holds its own lock."""
        if self._stdin_closed or self._run.done():
            raise BrokenPipeError("the relayed pipe through %s ended" % self._via.name)
        return memoryview(data)

    def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            self._via.writer.send([(protocol.END, self._stdin.sid, msgpack.packb({}))])

    # -- the end ---------------------------------------------------------------------------

    def exit_status(self, timeout: Optional[float] = None) -> Optional[int]:
        """The command's exit status (negative: the signal that killed it), as the
        intermediate says; None while it runs, or if what it said is no exit status."""
        try:
            status = self._run.result(timeout)
        except Exception:
            return None
        return status if type(status) is int and -MAX_STATUS <= status <= MAX_STATUS else None

    def kill(self) -> None:
        if not self._run.done() and not self._via.closed:
            call = Call.of(remote_relay.kill, (self._stdin.sid,))
            self._via.submit(call.payload, call.module, call.kind)

    def close(self) -> None:
        self.close_stdin()
        if self.exit_status(EXIT_GRACE) is None and not self._run.done():
            self.kill()
            self.exit_status(EXIT_GRACE)
        # the outputs' END: a relay still sending stops, and the agent forgets the streams
        ends = [(protocol.END, state.sid, msgpack.packb({"abort": "closed"})) for state in (self._stdout, self._stderr)]
        if not self._via.closed:
            self._via.writer.send(ends)
        for state in (self._stdin, self._stdout, self._stderr):
            self._via.close_stream(state)
