"""The agent's main loop: read frames from the controller, run calls, send results back.

Remote-safe. One thread at a time holds the reader role and reads frames.
When it reads a call it runs it inline, keeping the role: a short call costs no thread
hand-off at all (waking another thread costs more than a trivial call on a busy machine).
The role passes to another thread (woken, or started if none is idle) when the call
needs the controller (an import round trip, whose answer someone must read) or when a
watchdog sees it running longer than ``INLINE_SLICE``; then the caller finishes its call
and becomes a follower. So many calls still run at once. Writers share one lock. The protocol stream lives on private
copies of fds 0 and 1: fd 0 becomes /dev/null and fd 1 a copy of stderr, so whatever remote
code or its subprocesses print reaches the controller as stderr lines and never corrupts
the stream.
"""

import itertools
import os
import sys
import time
from _collections import deque  # collections itself costs a fresh agent ~1.5 ms to import

from chopsticks.wire import codec, mpack, protocol
from chopsticks.wire.window import Window
from chopsticks.agent import threads
from chopsticks.agent.children import ProcessGroups

# Bytes per read. Larger reads are above glibc's mmap threshold: every read would map and
# unmap its buffer, measured at 20-30 us per call in a threaded process.
READ_SIZE = 65536
# How long a worker waits for the controller to answer an import or data request.
REQUEST_TIMEOUT = 120.0
# A call running inline longer than this hands the reader role to another thread, so
# other calls are not held up behind it. The watchdog polls at this period only while
# calls keep coming (for WATCH_IDLE seconds after the last one) and sleeps otherwise, so
# back-to-back calls never pay for waking it. Measured on a 300-host fleet: polling for
# 0.2 s after each call cost each agent ~3 ms of CPU per call; 20 ms costs a tenth.
INLINE_SLICE = 0.002
WATCH_IDLE = 0.02


class Agent(object):
    def __init__(self, fd_in, fd_out, importer, config):
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.importer = importer
        self.max_result = config["max_result"]
        self.write_lock = threads.Lock()
        self.waiting = {}  # req_id -> [threads.Event, payload] for our own requests
        self.ids = itertools.count(1)
        self.decoder = protocol.Decoder()
        self.frames = deque()
        # The reader role, all guarded by self.lock:
        self.lock = threads.Lock()
        self.role_free = threads.Condition(self.lock)
        self.watch_wake = threads.Condition(self.lock)
        self.reader = None  # ident of the thread holding the role
        self.inline_since = None  # when the holder started running a call inline
        self.last_call = 0.0
        self.followers = 0  # threads waiting for the role
        self.watch_asleep = False
        self.streams = {}  # stream id -> Stream; the reader thread adds, its user removes
        self.temp_files = set()  # unfinished transfers' files, removed if the agent must exit
        self.children = ProcessGroups()  # commands' process groups, killed when the agent exits
        self.handlers = {
            protocol.MODULES: self.on_modules,
            protocol.DATA: self.on_reply,
            protocol.REFUSED: self.on_reply,
            protocol.TUNNEL_REPLY: self.on_reply,
            protocol.STREAM: self.on_stream,
            protocol.CREDIT: self.on_stream,
            protocol.END: self.on_stream,
            protocol.TEE: self.on_tee,
        }

    # -- writing ---------------------------------------------------------------------

    def send(self, kind, req_id, payload=b""):
        for frame in protocol.frames(kind, req_id, payload):
            with self.write_lock:  # per frame: a large result does not hold up the others
                for buf in frame:
                    view = memoryview(buf)
                    while view:
                        view = view[os.write(self.fd_out, view):]

    def request(self, kind, payload, timeout=REQUEST_TIMEOUT):
        """Send a request to the controller from a worker thread; return the reply's frame
        (``timeout`` None: however long the answer takes, as a nested tunnel's call)."""
        self.release_role()  # someone else must read the reply
        req_id = next(self.ids)
        waiter = [threads.Event(), None]
        self.waiting[req_id] = waiter
        self.send(kind, req_id, payload)
        if not waiter[0].wait(timeout):
            self.waiting.pop(req_id, None)
            raise ImportError("the controller did not answer within %ds" % REQUEST_TIMEOUT)
        return waiter[1]

    def release_role(self):
        """A call about to wait on the controller lets another thread read meanwhile."""
        with self.lock:
            if self.reader == threads.get_ident():
                self.give_up_role()

    def open_stream(self, sid):
        """The file stream ``sid`` for the calling remote function (see Stream)."""
        self.release_role()
        with self.lock:
            stream = self.streams.get(sid)
            if stream is None:
                stream = self.streams[sid] = Stream(self, sid)
        return stream

    def import_request(self, fullname):
        """Ask for a module (on_modules caches the reply); the controller's refusal, or None."""
        reply = self.request(protocol.IMPORT, mpack.packb(fullname))
        return mpack.unpackb(reply.payload) if reply.kind == protocol.REFUSED else None

    def data_request(self, package, resource):
        ok, value = mpack.unpackb(self.request(protocol.GET_DATA, mpack.packb([package, resource])).payload)
        if not ok:
            raise OSError(value)
        return value

    # -- the reader role -------------------------------------------------------------------

    def serve(self):
        """Run as reader and worker until the controller goes away; then exit."""
        threads.start(self.watch)
        self.follow()

    def follow(self):
        """Wait for the reader role; read frames and run calls inline until the role is taken."""
        me = threads.get_ident()
        try:
            while True:
                with self.lock:
                    while self.reader is not None:
                        self.followers += 1
                        self.role_free.wait()
                        self.followers -= 1
                    self.reader = me
                while self.reader == me:
                    frame = self.next_frame()
                    if frame.kind not in protocol.CALLS:
                        self.handlers[frame.kind](frame)
                        continue
                    with self.lock:
                        self.inline_since = time.monotonic()
                        if self.watch_asleep:
                            self.watch_wake.notify()
                    self.run_call(frame)
                    with self.lock:
                        if self.reader == me:
                            self.inline_since = None
                            self.last_call = time.monotonic()
        except Exception:
            import traceback
            traceback.print_exc()
            self.exit(70)

    def give_up_role(self):
        """Pass the reader role on (lock held): the holder is busy with a call."""
        self.reader = None
        self.inline_since = None
        self.last_call = time.monotonic()
        if self.followers:
            self.role_free.notify()
        else:
            threads.start(self.follow)

    def watch(self):
        """Take the reader role from a call that runs longer than INLINE_SLICE."""
        with self.lock:
            while True:
                now = time.monotonic()
                if self.inline_since is not None:
                    due = self.inline_since + INLINE_SLICE - now
                    if due <= 0:
                        self.give_up_role()
                    else:
                        self.watch_wake.wait(due)
                elif now - self.last_call < WATCH_IDLE:
                    self.watch_wake.wait(INLINE_SLICE)
                else:
                    self.watch_asleep = True
                    self.watch_wake.wait()
                    self.watch_asleep = False

    def next_frame(self):
        while not self.frames:
            large = self.decoder.take_large(READ_SIZE)
            if large is not None:  # a file chunk or big call: read it in place, no copies
                header, payload, filled = large
                view = memoryview(payload)
                while filled < len(payload):
                    got = os.readv(self.fd_in, [view[filled:]])
                    if not got:
                        self.end_of_input()
                    filled += got
                view.release()
                self.frames.extend(self.decoder.finish_large(header, payload))
                continue
            data = os.read(self.fd_in, READ_SIZE)
            if not data:
                self.end_of_input()
            self.frames.extend(self.decoder.feed(data))
        return self.frames.popleft()

    def end_of_input(self):
        """The controller hung up (or died): clean up and exit."""
        self.exit(0)

    def exit(self, code):
        """Leave nothing behind: unfinished transfers' files, commands still running."""
        self.remove_temp_files()
        self.children.kill_all()
        _exit(code)

    def remove_temp_files(self):
        for path in list(self.temp_files):
            try:
                os.unlink(path)
            except OSError:
                pass

    def on_modules(self, frame):
        """Modules from the controller: a reply to an import request, or sent unasked."""
        self.importer.add(mpack.unpackb(frame.payload))
        self.on_reply(frame)

    def on_stream(self, frame):
        """A file stream's data, credit or end, from the reader thread: hand it to the stream."""
        with self.lock:
            stream = self.streams.get(frame.req_id)
            if stream is None:  # it may arrive before the call that uses it
                stream = self.streams[frame.req_id] = Stream(self, frame.req_id)
        stream.deliver(frame)

    def on_tee(self, frame):
        """A chunk of a push through relays (``chopsticks.relay_put``): to this agent's own
        stream, if the route names one, and as a TEE frame of its own into the stdin of each
        agent this one relays (``agent.relay``), whose stream credit the controller spent."""
        (own, children), chunk = protocol.split_tee(frame.payload)
        if own is not None:
            self.on_stream(protocol.Frame(protocol.STREAM, own, bytes(chunk)))
        for relay_sid, route in children:
            data = b"".join(protocol.frames(protocol.TEE, 0, protocol.tee_payload(route, chunk))[0])
            self.on_stream(protocol.Frame(protocol.STREAM, relay_sid, data))

    def on_reply(self, frame):
        waiter = self.waiting.pop(frame.req_id, None)
        if waiter is not None:
            waiter[1] = frame
            waiter[0].set()

    # -- running calls ---------------------------------------------------------------------

    def run_call(self, frame):
        try:
            fn, args, kwargs = (_named if frame.kind == protocol.CALL_NAMED else _unpickle)(frame.payload)
            value = fn(*args, **kwargs)
        except SystemExit as exc:
            self.send(protocol.ERROR, frame.req_id, _describe(
                exc, "remote code called sys.exit(%r); the agent has exited" % (exc.code,)))
            self.exit(exc.code if isinstance(exc.code, int) else 1)
        except BaseException as exc:
            self.send(protocol.ERROR, frame.req_id, _describe(exc))
            return
        try:
            payload = codec.encode(value)
        except Exception as exc:
            self.send(protocol.ERROR, frame.req_id, _describe(exc))
            return
        if len(payload) > self.max_result:
            self.send(protocol.ERROR, frame.req_id, codec.encode({
                "type": "chopsticks.ResultTooLarge",
                "message": "the result is %d bytes encoded, over the tunnel's max_result of %d bytes"
                           % (len(payload), self.max_result),
                "traceback": "",
            }))
            return
        self.send(protocol.RESULT, frame.req_id, payload)


class Stream(object):
    """One file stream between a remote function and the controller, either way.

    Incoming (``put``): ``chunks_until_end()`` yields the bytes as they arrive and grants the
    controller credit for each chunk consumed; ``end`` is then the controller's closing dict.
    Outgoing (``fetch``): ``send(data)`` waits for credit, so the controller's memory stays
    bounded. ``window`` keeps the credit by the rules both ends share (``wire.window``).
    """

    def __init__(self, agent, sid):
        self.agent = agent
        self.sid = sid
        self.cond = threads.Condition()
        self.chunks = deque()
        self.end = None
        self.window = Window(sid)
        self.closed = False

    def deliver(self, frame):
        with self.cond:
            if frame.kind == protocol.STREAM:
                self.window.arrived(len(frame.payload))
                if not self.closed:
                    self.chunks.append(frame.payload)
            elif frame.kind == protocol.CREDIT:
                self.window.credited(mpack.unpackb(frame.payload))
            else:
                self.end = mpack.unpackb(frame.payload)
                if self.closed:
                    self.forget()
            self.cond.notify()

    def chunks_until_end(self):
        """Each chunk of an incoming stream, in order, until the controller's END."""
        while True:
            with self.cond:
                while not self.chunks and self.end is None and not self.closed:
                    self.cond.wait()
                if not self.chunks:
                    return
                chunk = self.chunks.popleft()
                grant = self.window.consumed(len(chunk))
            yield chunk
            if grant:
                self.agent.send(protocol.CREDIT, self.sid, mpack.packb(grant))

    def send(self, data):
        """Send bytes of an outgoing stream; False if the controller ended the stream first."""
        with self.cond:
            while not self.window.fits(len(data)) and self.end is None and not self.closed:
                self.cond.wait()
            if self.end is not None or self.closed:
                return False
            self.window.spend(len(data))
        self.agent.send(protocol.STREAM, self.sid, data)
        return True

    def close(self):
        """Done with the stream: later data is dropped, and it is forgotten at its END. A
        thread still waiting in ``chunks_until_end`` or ``send`` leaves."""
        with self.cond:
            self.closed = True
            self.chunks.clear()
            if self.end is not None:
                self.forget()
            while self.cond.waiters:
                self.cond.notify()

    def forget(self):
        with self.agent.lock:
            if self.agent.streams.get(self.sid) is self:
                del self.agent.streams[self.sid]


def _describe(exc, message=None):
    """Encode an exception as plain data: qualified type name, message, traceback."""
    import traceback  # only when something failed: it costs milliseconds to import
    kind = type(exc)
    try:
        text = str(exc) if message is None else message
    except Exception:
        text = "<unprintable %s>" % kind.__name__
    try:
        tb = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    except Exception:
        tb = ""
    info = {"type": "%s.%s" % (kind.__module__, kind.__qualname__), "message": text, "traceback": tb}
    try:
        return codec.encode(info)
    except Exception:  # text that even surrogateescape cannot carry (a lone surrogate)
        for key in ("message", "traceback"):
            info[key] = info[key].encode("utf-8", "backslashreplace").decode("utf-8")
        return codec.encode(info)


def _exit(code):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


AGENT = None  # the running agent, for remote functions that use streams


def _named(payload):
    """A call sent by name (``CALL_NAMED``): its function imported, its plain arguments."""
    module, qualname, args, kwargs = mpack.unpackb(payload)
    __import__(module)
    fn = sys.modules[module]
    for name in qualname.split("."):
        fn = getattr(fn, name)
    return fn, args, kwargs


def _unpickle(payload):
    """A pickled call. Imported only now, and the C unpickler alone: pickle.py would also
    import re and friends, and _pickle itself costs a fresh agent ~5 ms (functools,
    collections, copyreg), which a first call sent by name never pays."""
    try:
        from _pickle import loads
    except ImportError:  # pragma: no cover
        from pickle import loads
    return loads(payload)


def run(importer, config):
    """Take over the process's standard streams and serve the controller until EOF."""
    global AGENT
    fd_in = os.dup(0)
    fd_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass
    agent = AGENT = Agent(fd_in, fd_out, importer, config)
    importer.request = agent.import_request
    importer.request_data = agent.data_request
    hello = mpack.packb({
        "pid": os.getpid(),
        "python": list(sys.version_info[:3]),
        "executable": sys.executable,
    })
    os.write(fd_out, protocol.SYNC)
    agent.send(protocol.HELLO, 0, hello)
    agent.serve()

