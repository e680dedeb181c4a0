"""One live agent: the one place where protocol frames meet I/O. Controller-side.

A ``Connection`` owns a transport pipe. The agent's stdout is read by a callback that the
transport runs in the hub whenever bytes arrive (``pipe.start_reading``): it feeds the
decoder and resolves futures directly, which saves a greenlet switch and a loop round per
call; frames that need to write (import and data requests) are handled in their own
greenlet, since the hub must never block. The agent's stderr is read the same way, by a
callback from the hub (lines shown as remote output): no greenlet is left waiting per tunnel,
and a waiting greenlet costs ~15 KiB (its saved C stack and its Python data stack).
Writers share one lock (``writer.FrameWriter``); a call is sent without waiting: what the
pipe does not take at once goes on from a greenlet of its own. When the stdout stream ends, for any
reason, every pending call fails at once with ``TunnelClosed`` and the pipe is released,
in order: readers stop, then the process is reaped, then the fds close. File streams
(``chopsticks.transfer``) ride on the same pipe: their data and credit frames are routed
here to a ``StreamState`` each.
"""

import collections
import itertools
import pickle
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Set, Tuple, Type

import gevent
import gevent.event
import msgpack

from chopsticks import logs
from chopsticks.wire import codec, protocol
from chopsticks.wire.window import Window
from chopsticks.errors import (
    CallTimeout, ChopsticksError, ConnectError, ConnectTimeout, InternalError, ProtocolViolation, RemoteException,
    ResultTooLarge, SerializationError, TunnelClosed,
)
from chopsticks.future import CallFuture
from chopsticks.modules import ImportService
from chopsticks.transports import Pipe
from chopsticks.writer import FrameWriter

if TYPE_CHECKING:
    from chopsticks.nesting import Nested
    from chopsticks.sudo import SudoPrompt

# Remote stderr lines kept for error messages about a tunnel that failed.
STDERR_TAIL = 20
# Longest remote output line shown as one line; longer lines are split.
MAX_LINE = 64 << 10
# Import and data requests waiting for an answer, at most. With their size limits
# (protocol.AGENT_LIMITS) that bounds what they hold to 256 x 8 KiB = 2 MiB per tunnel.
REQUEST_BACKLOG = 256

# The stderr tail of every tunnel whose agent wrote none yet (most of them), never appended to.
_NO_LINES: Deque[str] = collections.deque(maxlen=0)

# A tunnel's account of an agent that ended before it started: (exception class, message).
Explained = Tuple[Type[Exception], str]


def _decoded(frame: protocol.Frame) -> Any:
    """A control frame's payload; payloads the codec cannot decode are the remote's doing."""
    try:
        return codec.decode(frame.payload)
    except Exception as exc:  # remote bytes: whatever msgpack or the codec makes of them
        raise protocol.ProtocolError("undecodable payload of a kind-%d message: %s" % (frame.kind, exc)) from exc


class StreamState:
    """The controller's side of one file stream (see ``chopsticks.transfer``).

    ``window`` counts its credit (``wire.window``): what a put may still send, or what a
    fetch's agent may still send. ``chunks`` hold what arrived and was not yet consumed,
    unless ``on_data`` takes each chunk as it arrives, in the hub (a relayed pipe's output).
    ``wake`` is set on any change. ``owed``: bytes consumed whose credit waits for
    ``crediting``, the write of the credit before (see ``Connection.stream_credit``)."""

    __slots__ = ("sid", "window", "chunks", "wake", "error", "on_data", "owed", "crediting")

    def __init__(self, sid: int):
        self.sid = sid
        self.window = Window(sid)
        self.chunks: Deque[bytes] = collections.deque()
        self.wake = gevent.event.Event()
        self.error: Optional[BaseException] = None
        self.on_data: Optional[Callable[[bytes], None]] = None
        self.owed = 0
        self.crediting: Optional[gevent.Greenlet] = None


class Connection:
    """A started agent: send calls, get results, serve its imports."""

    def __init__(self, name: str, pipe: Pipe, modules: ImportService, max_result: int,
                 on_output: Callable[[str, str], None] = logs.remote_output,
                 explain: Optional[Callable[[Optional[int], List[str]], Optional[Explained]]] = None,
                 nested: "Optional[Nested]" = None, gate: "Optional[SudoPrompt]" = None):
        self.name = name
        # explain(status, stderr lines) -> (exception class, message) or None: the tunnel's
        # own account of an agent that ended before it started (a missing image, sudo asking
        # for a password, no usable Python); the one place such diagnostics come from
        self.explain = explain
        self.pipe = pipe
        self.modules = modules
        self.max_result = max_result
        self.on_output = on_output
        self.hello: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None  # why the connection ended
        self._closing = False
        self._pending: Dict[int, CallFuture] = {}
        self._ids = itertools.count(1)
        self.writer = FrameWriter(pipe, self._break)
        self._hello = gevent.event.AsyncResult()
        self._sent_modules: Set[str] = set()
        self._stderr_tail: Deque[str] = _NO_LINES  # a deque of its own from the first line on
        self._stderr_partial = b""  # the last line of stderr so far, until its newline
        self._stderr_ended = gevent.event.Event()
        self._decoder = protocol.Decoder(max_message=max_result + (1 << 20), sync=True,
                                         limits=protocol.AGENT_LIMITS)
        self._finisher: Optional[gevent.Greenlet] = None
        self._finished = gevent.event.Event()
        self._exiting = False  # the agent said it is exiting (sys.exit in a call)
        self._broken: Optional[str] = None  # why we are killing it ourselves
        self._streams: Dict[int, StreamState] = {}  # open file streams, by id
        self._last_stream_id = 0
        # The agent's import and data requests, answered in order by one greenlet that lives,
        # with its queue, while there are some (an idle tunnel holds neither); a backlog past
        # REQUEST_BACKLOG is a protocol violation, so a flood cannot pile up greenlets.
        self._requests: Optional[Deque[protocol.Frame]] = None
        self._request_server: Optional[gevent.Greenlet] = None
        # the tunnels the agent's code opens, and the answers to its requests about them
        self.nested = nested
        # what holds the bootstrap back until sudo is answered (``chopsticks.sudo``), or None
        self.gate = gate
        pipe.start_reading(self._on_data, self._on_stderr)

    @property
    def closed(self) -> bool:
        """True once the agent is gone or going: no new call may be sent on it."""
        return self.error is not None or self._exiting or self._finisher is not None or self._broken is not None

    # -- starting --------------------------------------------------------------------

    def handshake(self, stdin_bytes: bytes, timeout: float, stated_timeout: float) -> Dict[str, Any]:
        """Feed the bundle and wait ``timeout`` for the agent's HELLO, else ConnectError.

        ``stated_timeout`` is the user's whole connect timeout, for the message."""
        started = time.monotonic()
        timer = gevent.Timeout(timeout)  # covers the write too: a remote may never read it
        timer.start()
        try:
            if self.gate is not None:
                self._wait_for_gate()
                if self.gate.refused:
                    return {}
            try:
                with self.writer.lock:
                    self.pipe.write(stdin_bytes)
            except OSError:
                pass  # the pipe ended: _finish explains why through _hello
            self._hello.wait()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
        finally:
            timer.close()
        if not self._hello.ready():
            self.close(kill=True)
            raise ConnectTimeout("[%s] the agent did not start within %ss%s"
                                 % (self.name, stated_timeout, self._stderr_note()))
        hello = self._hello.get()
        logs.event("tunnel_connected", host=self.name, python=".".join(map(str, hello["python"])),
                   elapsed_ms=round((time.monotonic() - started) * 1000, 1))
        return hello

    def _wait_for_gate(self) -> None:
        """Until sudo is answered or let the agent run (or the agent ended: then _hello says why)."""
        assert self.gate is not None
        gevent.wait([self.gate.opened, self._finished], count=1)

    # -- calls -----------------------------------------------------------------------

    def submit(self, payload: bytes, module: Optional[str] = None, kind: int = protocol.CALL,
               timeout: Optional[float] = None) -> CallFuture:
        """Send one call (``kind``: ``CALL``, a pickle, or ``CALL_NAMED``); return its future.

        ``module`` names the module of the called function: its source (and its package's)
        goes first, unasked, so the remote does not spend round trips importing it.
        ``timeout`` (seconds from now) covers sending the call and its result: then the
        future fails with CallTimeout and the call is forgotten (``forget``). A timer in the
        hub keeps that time: no greenlet waits for it."""
        if self.closed:
            raise self.error or TunnelClosed("[%s] the agent is exiting" % self.name)
        req_id = next(self._ids)
        future = CallFuture(self.name, req_id)
        self._pending[req_id] = future
        messages: List[Tuple[int, int, bytes]] = []
        if module is not None and module not in self._sent_modules:
            modules = self.modules.preload_message(module, self._sent_modules)
            if modules is not None:
                messages.append((protocol.MODULES, 0, modules))
        messages.append((kind, req_id, payload))
        future.sending = self.writer.send(messages)
        if timeout is not None:
            self._expire(future, timeout)
        return future

    def _expire(self, future: CallFuture, timeout: float) -> None:
        timer = gevent.get_hub().loop.timer(timeout)

        def expired() -> None:  # in the hub
            timer.close()
            if not future.done():
                self.forget(future, wait=False)
                future._resolve(error=CallTimeout("[%s] call did not finish within %ss" % (self.name, timeout)))

        timer.start(expired)
        future.add_done_callback(lambda _: timer.close())

    def forget(self, future: CallFuture, wait: bool = True) -> None:
        """Stop tracking a call whose caller gave up (timeout); a late result is dropped. A
        write of it still under way is stopped (``wait``: before this returns), which closes
        the tunnel if it tore a frame."""
        if self._pending.get(future.req_id) is future:
            del self._pending[future.req_id]
        future.stop_sending(wait)

    # -- file streams ----------------------------------------------------------------------

    def open_stream(self) -> StreamState:
        if self.closed:
            raise self.error or TunnelClosed("[%s] the agent is exiting" % self.name)
        self._last_stream_id += 1
        state = StreamState(self._last_stream_id)
        self._streams[state.sid] = state
        return state

    def close_stream(self, state: StreamState) -> None:
        self._streams.pop(state.sid, None)

    def stream_send(self, state: StreamState, data) -> None:
        """Send the next bytes of an outgoing stream, which the caller saw ``fits`` its window."""
        state.window.spend(len(data))
        self.writer.write(protocol.STREAM, state.sid, data)

    def stream_credit(self, state: StreamState, size: int, wait: bool = True) -> None:
        """The caller consumed ``size`` bytes of an incoming stream: the agent may send more.

        ``wait`` False: the credit goes without blocking the caller (from the hub). While the
        credit before it waits for the pipe, it adds up in ``owed`` and goes next, as one:
        a stream has one credit write at a time, and its window counts only credit handed
        to the pipe, so an agent that reads none of it and sends on is past its credit,
        not a pile of waiting writes."""
        if wait:
            grant = state.window.consumed(size)
            if grant:
                self.writer.write(protocol.CREDIT, state.sid, msgpack.packb(grant))
            return
        state.owed += size
        if state.crediting is None:
            self._send_credit(state)

    def _send_credit(self, state: StreamState) -> None:
        grant, state.owed = state.window.consumed(state.owed), 0
        if grant:
            state.crediting = self.writer.send([(protocol.CREDIT, state.sid, msgpack.packb(grant))])
            if state.crediting is not None:  # it waits for the pipe
                state.crediting.link(lambda _: self._credit_sent(state))

    def _credit_sent(self, state: StreamState) -> None:
        state.crediting = None
        if state.owed and self._streams.get(state.sid) is state:
            self._send_credit(state)

    def stream_end(self, state: StreamState, info: Dict[str, Any]) -> None:
        self.writer.write(protocol.END, state.sid, msgpack.packb(info))

    def _break(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
            # EOF after the torn frame: the agent sees a truncated frame, removes its
            # unfinished files and exits; one that does not within 2 s is killed
            gevent.spawn(self.close, 2.0)

    # -- reading -------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        """Runs in the hub for every chunk of the agent's stdout; ``b""`` at its end."""
        if self._finisher is not None:
            return
        if not data:
            self._finisher = gevent.spawn(self._finish, None)
            return
        error: BaseException
        try:
            for frame in self._decoder.feed(data):
                handler = self.HANDLERS.get(frame.kind)
                if handler is None:
                    raise protocol.ProtocolError("unexpected frame kind %d" % frame.kind)
                handler(self, frame)
            return
        except protocol.ProtocolError as exc:  # the remote's bytes: the decoder's and handlers' verdict
            error = ProtocolViolation("[%s] the remote broke the protocol (%s); tunnel closed" % (self.name, exc))
            logs.warning("protocol_violation", host=self.name, reason=str(exc))
        except Exception as exc:  # anything else is a bug of ours in a handler: say so
            error = InternalError("[%s] chopsticks failed handling the agent's messages (%s: %s); tunnel "
                                  "closed. This is a bug in chopsticks, not the remote's doing: please "
                                  "report it" % (self.name, type(exc).__name__, exc))
            error.__cause__ = exc
            logs.warning("internal_error", host=self.name, error=repr(exc), traceback=traceback.format_exc())
        self._finisher = gevent.spawn(self._finish, error)

    def _ended_error(self) -> BaseException:
        if self._closing:
            return TunnelClosed("[%s] %s" % (self.name, self._broken or "tunnel closed"))
        status = self.pipe.exit_status(2.0)
        lost = self.pipe.end_reason  # a transport's own account, e.g. SSH
        self._stderr_ended.wait(1.0)
        if self.hello is None:
            explained = self.explain(status, list(self._stderr_tail)) if self.explain else None
            if explained is not None:
                kind, message = explained
                return kind("[%s] %s%s" % (self.name, message, self._stderr_note()))
            return ConnectError("[%s] the agent exited before it started (%s)%s"
                                % (self.name, lost or "exit status %s" % status, self._stderr_note()))
        if status is None and lost:
            return TunnelClosed("[%s] %s%s" % (self.name, lost, self._stderr_note()))
        how = "was killed by signal %d" % -status if status is not None and status < 0 else \
            "exited with status %s" % status
        return TunnelClosed("[%s] the agent %s%s" % (self.name, how, self._stderr_note()))

    def _stderr_note(self) -> str:
        if not self._stderr_tail:
            return ""
        return "; its last stderr lines:\n  " + "\n  ".join(self._stderr_tail)

    def _finish(self, error: Optional[BaseException]) -> None:
        self.pipe.stop_reading()
        if error is None:
            error = self._ended_error()
        self.error = error
        if not self._hello.ready():
            self._hello.set_exception(error)
        pending, self._pending = self._pending, {}
        for future in pending.values():
            future._resolve(error=error)
        for state in self._streams.values():
            state.error = error
            state.wake.set()
        if self._request_server is not None:
            self._request_server.kill(block=False)
        if self.nested is not None:
            self.nested.end()  # the tunnels through this one ended with it
        self.pipe.close_stdin()
        self._stderr_ended.wait(2.0)
        self.pipe.close()
        self._on_stderr(b"")  # a last line without its newline still shows, if stderr never ended
        self._finished.set()
        logs.event("tunnel_closed", host=self.name, reason=str(error))

    def _on_stderr(self, data: bytes) -> None:
        """Runs in the hub for every chunk of the agent's stderr; ``b""`` at its end."""
        if self._stderr_ended.is_set():
            return
        if not data:
            if self._stderr_partial:
                self._output_line(self._stderr_partial)
            self._stderr_partial = b""
            self._stderr_ended.set()
            return
        lines = (self._stderr_partial + data).split(b"\n")
        partial = lines.pop()
        while len(partial) > MAX_LINE:
            lines.append(partial[:MAX_LINE])
            partial = partial[MAX_LINE:]
        self._stderr_partial = partial
        for line in lines:
            self._output_line(line)

    def _output_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if self.gate is not None and self.gate.on_line(line, self.pipe):
            return  # sudo's prompt, or the line that says it let the agent run: not output
        if self._stderr_tail is _NO_LINES:
            self._stderr_tail = collections.deque(maxlen=STDERR_TAIL)
        self._stderr_tail.append(line)
        self.on_output(self.name, line)

    # -- frame handlers (run in the hub, from _on_data: they must not block) ------------

    def _on_hello(self, frame: protocol.Frame) -> None:
        if self.hello is not None:
            raise protocol.ProtocolError("a second HELLO")
        hello = _decoded(frame)  # a closed set of types, a budget of containers
        if not isinstance(hello, dict) or not isinstance(hello.get("python"), list):
            raise protocol.ProtocolError("malformed HELLO")
        self.hello = hello
        if self._decoder.preamble:
            for line in self._decoder.preamble.decode("utf-8", "replace").splitlines():
                self._output_line(line.encode())
        self._hello.set(hello)

    def _on_result(self, frame: protocol.Frame) -> None:
        future = self._pending.pop(frame.req_id, None)
        if future is None:
            return  # the caller gave up on it
        try:
            value = codec.decode(frame.payload)
        except Exception as exc:
            future._resolve(error=SerializationError(
                "[%s] the result could not be decoded: %s" % (self.name, exc)))
            return
        future._resolve(value)

    def _on_error(self, frame: protocol.Frame) -> None:
        future = self._pending.pop(frame.req_id, None)
        if future is None:
            return
        try:
            info = codec.decode(frame.payload)
            remote_type, message, tb = info["type"], info["message"], info["traceback"]
            if not all(isinstance(x, str) for x in (remote_type, message, tb)):
                raise TypeError("non-string fields")
        except Exception as exc:
            future._resolve(error=SerializationError(
                "[%s] the remote error could not be decoded: %s" % (self.name, exc)))
            return
        if remote_type == "builtins.SystemExit":
            self._exiting = True  # the agent exits after this: later calls need a new one
        if remote_type == "chopsticks.ResultTooLarge":
            future._resolve(error=ResultTooLarge("[%s] %s" % (self.name, message)))
        else:
            future._resolve(error=RemoteException(self.name, remote_type, message, tb))

    def _on_stream(self, frame: protocol.Frame) -> None:
        state = self._streams.get(frame.req_id)
        if state is None:
            if not 0 < frame.req_id <= self._last_stream_id:
                raise protocol.ProtocolError("data for stream %d, which was never opened" % frame.req_id)
            return  # a stream we gave up on: what was in flight is dropped
        state.window.arrived(len(frame.payload))
        if state.on_data is not None:
            state.on_data(frame.payload)
            return
        state.chunks.append(frame.payload)
        state.wake.set()

    def _on_credit(self, frame: protocol.Frame) -> None:
        state = self._streams.get(frame.req_id)
        if state is not None:  # else a late credit for a finished stream
            state.window.credited(_decoded(frame))
            state.wake.set()

    def _on_request(self, frame: protocol.Frame) -> None:
        requests = self._requests
        if requests is None:
            requests = self._requests = collections.deque()
            self._request_server = gevent.spawn(self._serve_requests, requests)
        elif len(requests) >= REQUEST_BACKLOG:
            raise protocol.ProtocolError("more than %d import and data requests unanswered" % REQUEST_BACKLOG)
        requests.append(frame)

    def _serve_requests(self, requests: Deque[protocol.Frame]) -> None:
        while requests:
            frame = requests.popleft()
            if frame.kind == protocol.IMPORT:
                kind, reply = self.modules.answer_import(frame.payload, self._sent_modules, self.name)
            else:
                kind, reply = protocol.DATA, self.modules.answer_data(frame.payload)
            self._reply(kind, frame.req_id, reply)
        # no switch since the check: the next request finds neither and starts them anew
        self._requests = self._request_server = None

    def _on_tunnel(self, frame: protocol.Frame) -> None:
        request = _decoded(frame)
        if self.nested is not None:
            self.nested.take(frame.req_id, len(frame.payload), request, self.name, self._reply, self._violated)
            return
        refusal = ChopsticksError("[%s] this tunnel opens no tunnels for remote code" % self.name)
        gevent.spawn(self._reply, protocol.TUNNEL_REPLY, frame.req_id, pickle.dumps((False, refusal)))

    def _violated(self, reason: str) -> None:
        """The agent broke the protocol, as found outside the read callback: close it."""
        logs.warning("protocol_violation", host=self.name, reason=reason)
        if self._finisher is None:
            self._finisher = gevent.spawn(self._finish, ProtocolViolation(
                "[%s] the remote broke the protocol (%s); tunnel closed" % (self.name, reason)))

    def _reply(self, kind: int, req_id: int, payload: bytes) -> None:
        try:
            self.writer.write(kind, req_id, payload)
        except OSError:
            pass  # the agent is gone; the stdout callback reports why

    HANDLERS = {
        protocol.HELLO: _on_hello,
        protocol.RESULT: _on_result,
        protocol.ERROR: _on_error,
        protocol.IMPORT: _on_request,
        protocol.GET_DATA: _on_request,
        protocol.STREAM: _on_stream,
        protocol.CREDIT: _on_credit,
        protocol.TUNNEL: _on_tunnel,
    }

    # -- closing ---------------------------------------------------------------------

    def close(self, timeout: float = 5.0, kill: bool = False) -> None:
        """Close the agent's stdin (it exits), wait for the stream to end, then release all.

        ``kill`` kills the agent at once instead (for an agent that never started)."""
        if self._finisher is None:
            self._closing = True
            self.pipe.close_stdin()
            if kill:
                self.pipe.kill()
            self._finished.wait(timeout)
            if self._finisher is None:  # the agent ignored EOF: _finish kills it
                self._finisher = gevent.spawn(self._finish, None)
        self._finished.wait()
