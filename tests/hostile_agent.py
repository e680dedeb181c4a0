"""A hostile remote: speaks the protocol, but sends crafted frames. Run as a subprocess by tests.

Usage: hostile_agent.py SCENARIO MARKER_PATH. It swallows the bootstrap bundle, says HELLO,
then answers the first call according to SCENARIO. Never imported by the controller.
"""

import os
import pickle
import sys

import msgpack

from chopsticks.wire import codec, protocol

scenario, marker = sys.argv[1], sys.argv[2]
# Every byte the controller sends is kept here, for tests on what it gives away.
received = open(marker + ".received", "ab", buffering=0)


def read(n):
    data = os.read(0, n)
    received.write(data)
    return data


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = read(n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data


def send(*buffers):
    for buf in buffers:
        view = memoryview(buf)
        while view:
            view = view[os.write(1, view):]


def send_frame(kind, req_id, payload=b""):
    send(*protocol.encode(kind, req_id, payload))


decoder = protocol.Decoder()
pending = []


def next_frame():
    while not pending:
        data = read(65536)
        if not data:
            sys.exit(0)
        pending.extend(decoder.feed(data))
    return pending.pop(0)


def next_call():
    while True:
        frame = next_frame()
        if frame.kind in protocol.CALLS:
            return frame


class Evil:
    """Unpickling this on the controller would create the marker file."""

    def __reduce__(self):
        return (os.mkdir, (marker,))


read_exact(int(read_exact(8), 16))  # the bundle: ignored
send(protocol.SYNC)
# A message made to unfold in the controller's memory: an array of ``count`` empty arrays
# (one byte each on the wire, ~64 in memory), as large as a 1 MiB max_result tunnel takes.
BOMB_COUNT = (2 << 20) - 64
LISTS_BOMB = b"\xdd" + BOMB_COUNT.to_bytes(4, "big") + b"\x90" * BOMB_COUNT

if scenario == "hello_bomb":
    send(*protocol.encode(protocol.HELLO, 0, LISTS_BOMB))
    while True:
        next_frame()
send_frame(protocol.HELLO, 0, msgpack.packb({"pid": os.getpid(), "python": [3, 11, 0], "executable": "evil"}))
call = next_call()

if scenario == "pickle_result":
    send_frame(protocol.RESULT, call.req_id, pickle.dumps(Evil()))
elif scenario == "pickle_error":
    send_frame(protocol.ERROR, call.req_id, pickle.dumps(Evil()))
elif scenario == "pickle_in_ext":
    send_frame(protocol.RESULT, call.req_id, msgpack.packb(msgpack.ExtType(1, pickle.dumps(Evil()))))
elif scenario == "unknown_ext":
    send_frame(protocol.RESULT, call.req_id, msgpack.packb(msgpack.ExtType(99, b"\x80\x04x")))
elif scenario == "oversized_frame":
    send(protocol.PREFIX.pack(3, protocol.CHUNK + 1) + b"\x92\x11\x01")
elif scenario == "endless_message":
    header = msgpack.packb([protocol.RESULT, call.req_id, 1])
    piece = b"\0" * protocol.CHUNK
    for _ in range(64):
        send(protocol.PREFIX.pack(len(header), len(piece)) + header, piece)
elif scenario == "bomb":
    n = 4 << 20
    send_frame(protocol.RESULT, call.req_id, b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n)
elif scenario == "request_flood":
    for req_id in range(1, 20001):  # and never read a reply
        send_frame(protocol.IMPORT, req_id, msgpack.packb("chopsticks.connection"))
    import time
    time.sleep(60)
elif scenario == "fat_requests":
    # one real import whose reply fills the pipe (never read), then 200 requests of 1 MiB each
    send_frame(protocol.IMPORT, 1, msgpack.packb("chopsticks.connection"))
    fat = msgpack.packb("x" * ((1 << 20) - 16))
    for req_id in range(2, 202):
        send(*protocol.encode(protocol.IMPORT, req_id, fat))
elif scenario == "tiny_partials":
    # a million unfinished 1-byte messages, each under its own request id
    frames = []
    for req_id in range(1, 1000001):
        header = msgpack.packb([protocol.RESULT, req_id, 1])
        frames.append(protocol.PREFIX.pack(len(header), 1) + header + b"x")
        if len(frames) == 4096:
            send(b"".join(frames))
            frames = []
elif scenario == "worst_result":
    # the densest result the codec accepts: one-element lists of a small negative int (no
    # cached int object), filling a 1 MiB max_result
    pairs = ((1 << 20) - 16) // 2
    send_frame(protocol.RESULT, call.req_id, b"\xdd" + pairs.to_bytes(4, "big") + b"\x91\xec" * pairs)
elif scenario == "garbage":
    send(os.urandom(4096))
elif scenario == "unknown_kind":
    send_frame(99, call.req_id, b"")
elif scenario == "stray_result":
    send_frame(protocol.RESULT, 99999, codec.encode("not yours"))
    send_frame(protocol.RESULT, call.req_id, codec.encode("ok"))
elif scenario == "probe":
    # Ask the controller for things it must refuse, then report what came back as the result.
    answers = {}
    requests = [
        ("data", ["chopsticks", "../../../../etc/passwd"]),
        ("data", ["chopsticks", "/etc/passwd"]),
        ("data", ["chopsticks", "agent/../../setup.py"]),
        ("data", ["os", "path.py"]),
        ("data", ["../etc", "passwd"]),
        ("data", [1, 2]),
        ("data", "junk"),
        ("import", "os"),
        ("import", "subprocess"),
        ("import", "../../etc/passwd"),
        ("import", "/etc/passwd"),
        ("import", ["list"]),
        ("import", "antigravity"),
    ]
    for req_id, (what, arg) in enumerate(requests, start=1000):
        kind = protocol.GET_DATA if what == "data" else protocol.IMPORT
        send_frame(kind, req_id, msgpack.packb(arg))
        while True:
            frame = next_frame()
            if frame.req_id == req_id:
                break
        reply = msgpack.unpackb(frame.payload)
        answers[what + " " + repr(arg)] = repr(reply)[:300]
    send_frame(protocol.RESULT, call.req_id, codec.encode(answers))
elif scenario == "probe_secrets":
    # Ask for modules and data that sit on the controller's path but that it never imported.
    answers = {}
    requests = [
        (protocol.IMPORT, "secret_settings"),
        (protocol.IMPORT, "secret_pkg"),
        (protocol.IMPORT, "secret_pkg.creds"),
        (protocol.GET_DATA, ["secret_pkg", "creds.txt"]),
    ]
    for req_id, (kind, arg) in enumerate(requests, start=1000):
        send_frame(kind, req_id, msgpack.packb(arg))
        while True:
            frame = next_frame()
            if frame.req_id == req_id:
                break
        answers[repr(arg)] = [frame.kind, msgpack.unpackb(frame.payload)]
    send_frame(protocol.RESULT, call.req_id, codec.encode(answers))
elif scenario == "stream_unopened":
    send_frame(protocol.STREAM, 77, b"data for a stream the controller never opened")
elif scenario == "stream_flood":
    # a fetch: answer its "what is there" call, then push more than the credit allows
    send_frame(protocol.RESULT, call.req_id, codec.encode("file"))
    call = next_call()
    piece = b"\0" * protocol.STREAM_CHUNK
    for _ in range(protocol.STREAM_WINDOW // protocol.STREAM_CHUNK + 4):
        send_frame(protocol.STREAM, 1, piece)
elif scenario == "bad_credit":
    send_frame(protocol.CREDIT, 1, msgpack.packb(-5))
else:
    raise SystemExit("unknown scenario " + scenario)

# Stay alive until the controller hangs up, so it is the controller that decides.
while True:
    next_frame()
