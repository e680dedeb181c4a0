"""The agent's main loop: read frames from the controller, run calls, send results back.

Remote-safe. The main thread only reads and dispatches frames; calls run in a pool of
worker threads (so a call can wait on an import round trip that the main thread answers,
and many calls run at once). Writers share one lock. The protocol stream lives on private
copies of fds 0 and 1: fd 0 becomes /dev/null and fd 1 a copy of stderr, so whatever remote
code or its subprocesses print reaches the controller as stderr lines and never corrupts
the stream.
"""

import itertools
import os
import pickle
import queue
import sys
import threading
import traceback

import msgpack

from chopsticks import codec, protocol

# How long a worker waits for the controller to answer an import or data request.
REQUEST_TIMEOUT = 120.0


class Agent(object):
    def __init__(self, fd_in, fd_out, importer, config):
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.importer = importer
        self.max_result = config["max_result"]
        self.write_lock = threading.Lock()
        self.waiting = {}  # req_id -> [threading.Event, payload] for our own requests
        self.ids = itertools.count(1)
        self.tasks = queue.SimpleQueue()
        self.idle = 0
        self.idle_lock = threading.Lock()
        self.handlers = {
            protocol.CALL: self.on_call,
            protocol.MODULES: self.on_reply,
            protocol.DATA: self.on_reply,
        }

    # -- writing ---------------------------------------------------------------------

    def send(self, kind, req_id, payload=b""):
        buffers = protocol.encode(kind, req_id, payload)
        with self.write_lock:
            for buf in buffers:
                view = memoryview(buf)
                while view:
                    view = view[os.write(self.fd_out, view):]

    def request(self, kind, payload):
        """Send a request to the controller from a worker thread and wait for the reply."""
        req_id = next(self.ids)
        waiter = [threading.Event(), None]
        self.waiting[req_id] = waiter
        self.send(kind, req_id, payload)
        if not waiter[0].wait(REQUEST_TIMEOUT):
            self.waiting.pop(req_id, None)
            raise ImportError("the controller did not answer within %ds" % REQUEST_TIMEOUT)
        return waiter[1]

    def import_request(self, fullname):
        return msgpack.unpackb(self.request(protocol.IMPORT, msgpack.packb(fullname)))

    def data_request(self, package, resource):
        ok, value = msgpack.unpackb(self.request(protocol.GET_DATA, msgpack.packb([package, resource])))
        if not ok:
            raise OSError(value)
        return value

    # -- reading (main thread) ---------------------------------------------------------

    def serve(self):
        decoder = protocol.Decoder()
        while True:
            data = os.read(self.fd_in, 262144)
            if not data:
                return
            for frame in decoder.feed(data):
                if frame.kind == protocol.EXIT:
                    return
                self.handlers[frame.kind](frame)

    def on_reply(self, frame):
        waiter = self.waiting.pop(frame.req_id, None)
        if waiter is not None:
            waiter[1] = frame.payload
            waiter[0].set()

    def on_call(self, frame):
        with self.idle_lock:
            spawn = self.idle == 0
            if not spawn:
                self.idle -= 1
        if spawn:
            worker = threading.Thread(target=self.work, args=(frame,), name="chopsticks-worker")
            worker.daemon = True
            worker.start()
        else:
            self.tasks.put(frame)

    # -- workers -------------------------------------------------------------------------

    def work(self, frame):
        while True:
            self.run_call(frame)
            with self.idle_lock:
                self.idle += 1
            frame = self.tasks.get()

    def run_call(self, frame):
        try:
            fn, args, kwargs = pickle.loads(frame.payload)
            value = fn(*args, **kwargs)
        except SystemExit as exc:
            self.send(protocol.ERROR, frame.req_id, _describe(
                exc, "remote code called sys.exit(%r); the agent has exited" % (exc.code,)))
            _exit(exc.code if isinstance(exc.code, int) else 1)
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


def _describe(exc, message=None):
    """Encode an exception as plain data: qualified type name, message, traceback."""
    kind = type(exc)
    try:
        text = str(exc) if message is None else message
    except Exception:
        text = "<unprintable %s>" % kind.__name__
    try:
        tb = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
    except Exception:
        tb = ""
    return codec.encode({
        "type": "%s.%s" % (kind.__module__, kind.__qualname__),
        "message": text,
        "traceback": tb,
    })


def _exit(code):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run(importer, config):
    """Take over the process's standard streams and serve the controller until EOF."""
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
    agent = Agent(fd_in, fd_out, importer, config)
    importer.request = agent.import_request
    importer.request_data = agent.data_request
    hello = msgpack.packb({
        "pid": os.getpid(),
        "python": list(sys.version_info[:3]),
        "executable": sys.executable,
        "msgpack": "c" if _msgpack_is_c() else "fallback",
    })
    os.write(fd_out, protocol.SYNC)
    agent.send(protocol.HELLO, 0, hello)
    try:
        agent.serve()
    except Exception:
        traceback.print_exc()
        _exit(70)
    _exit(0)


def _msgpack_is_c():
    return not msgpack.Packer.__module__.endswith("fallback")
