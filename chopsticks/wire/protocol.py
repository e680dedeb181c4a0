"""Wire frames: the sans-IO protocol layer shared by the controller and the remote agent.

Remote-safe: standard library only, Python 3.9 syntax. Nothing here reads or
writes a file descriptor; bytes go in through ``Decoder.feed`` and out of ``encode``.

A frame on the wire::

    +----------------+----------------+----------------------+------------------+
    | header length  | payload length | header (msgpack)     | payload (raw)    |
    | u16 big-endian | u32 big-endian | [kind, req_id(, 1)]  | bytes, untouched |
    +----------------+----------------+----------------------+------------------+

The payload is never re-encoded into the header, so large payloads are written as they are
(a ``memoryview`` slice) and read without copying them into a msgpack structure. A message
whose payload is larger than ``CHUNK`` travels as several frames of the same kind and
request id; every frame but the last carries a third header field ``1`` ("more follows"),
and the decoder joins them back, up to ``max_message`` bytes.

Before the agent's first frame, a remote login shell may print anything to stdout. The
agent writes ``SYNC`` before its first frame; a decoder created with ``sync=True`` discards
(and reports) whatever precedes it.
"""

import struct

from chopsticks.wire import mpack

# Message kinds. Controller -> agent:
CALL = 1  # payload: pickle of (function, args, kwargs)
CALL_NAMED = 5  # payload: msgpack [module, qualified name, args, kwargs]: a call with no pickle
CALLS = (CALL, CALL_NAMED)
MODULES = 2  # reply to IMPORT; payload: msgpack [[name, is_pkg, filename, source], ...]
DATA = 3  # reply to GET_DATA; payload: msgpack [ok, bytes or error message]
REFUSED = 4  # reply to IMPORT for a module the controller has but does not serve; payload: msgpack str, why
TUNNEL_REPLY = 6  # reply to TUNNEL; payload: pickle of (True, value) or (False, exception)
# Either way, for file streams (``req_id`` is the stream id, chosen by the controller):
STREAM = 8  # payload: the next raw bytes of the stream, at most one CHUNK, never continued
CREDIT = 9  # payload: msgpack int, bytes the receiver has consumed: the sender may send that much more
END = 10  # controller -> agent only; payload: msgpack dict: the stream's end (size, digest) or abort
# Controller -> agent, for pushes through relays (``chopsticks.relay_put``): a file chunk for
# this agent's own stream and for the agents it relays. Payload: ``tee_payload(route, chunk)``.
TEE = 11
# Agent -> controller:
HELLO = 16  # first frame; payload: msgpack {"pid", "python", "version", "executable"}
RESULT = 17  # payload: codec-encoded value
ERROR = 18  # payload: codec-encoded dict describing the exception
IMPORT = 19  # payload: msgpack module name
GET_DATA = 20  # payload: msgpack [package, resource]
TUNNEL = 21  # a tunnel remote code opens, calls or closes (``agent.nested``); payload: msgpack [op, ...]

SYNC = b"\x00\xffchopsticks-agent-ready\xff\x00"
# File streams: bytes a sender may have in flight before the receiver's first CREDIT, and the
# size of each STREAM frame's payload.
STREAM_WINDOW = 4 << 20
STREAM_CHUNK = 256 << 10
PREFIX = struct.Struct(">HI")
TEE_ROUTE = struct.Struct(">I")  # the length of a TEE payload's route
# Messages above this size are split into several frames, so a big result or argument
# never blocks the other traffic on a tunnel for long and no frame needs a huge buffer.
CHUNK = 1 << 20
# Default cap on one reassembled message. The controller lowers or raises it per tunnel.
MAX_MESSAGE = 256 << 20
# How much junk before SYNC a decoder tolerates (login banners, motd).
MAX_PREAMBLE = 1 << 20
# What one partly received message costs beyond its bytes (its buffer, key and table slot,
# ~200 bytes measured), counted against max_message: many tiny messages started at once
# cost their memory, not just their payload bytes.
PARTIAL_COST = 256
# The largest request about a tunnel remote code opened (``agent.nested``: a call's pickle):
# answers hold theirs until the call returns, so the controller bounds them, one and together.
MAX_TUNNEL_REQUEST = 8 << 20
# The largest message of each kind an agent may send, where that is far below the tunnel's
# max_message (results and errors): a controller's decoder refuses anything bigger before it
# buffers or decodes it, so no small control message can unfold into a large allocation.
# A HELLO is ~150 bytes; a module name is under 512 characters; a package data path is
# bounded by PATH_MAX; a credit is one msgpack int.
AGENT_LIMITS = {
    HELLO: 64 << 10,
    IMPORT: 1 << 10,
    GET_DATA: 8 << 10,
    CREDIT: 16,
    STREAM: STREAM_CHUNK,
    TUNNEL: MAX_TUNNEL_REQUEST,
}


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame sequence."""


class Frame(tuple):
    """One decoded message: ``(kind, req_id, payload)``."""

    __slots__ = ()

    def __new__(cls, kind, req_id, payload):
        return tuple.__new__(cls, (kind, req_id, payload))

    kind = property(lambda self: self[0])
    req_id = property(lambda self: self[1])
    payload = property(lambda self: self[2])


def _header(kind, req_id, more=False):
    # The common header, a two-element msgpack array of small ints, is built by hand:
    # the agent packs in plain Python (mpack), and this is its hottest path.
    if not more and 0 <= kind < 128:
        if 0 <= req_id < 128:
            return bytes((0x92, kind, req_id))
        if 0 <= req_id < 0x10000:
            return bytes((0x92, kind, 0xCD)) + req_id.to_bytes(2, "big")
        if 0 <= req_id < 0x100000000:
            return bytes((0x92, kind, 0xCE)) + req_id.to_bytes(4, "big")
    return mpack.packb([kind, req_id, 1] if more else [kind, req_id])


def _parse_header(header):
    # Mirror of _header's fast path; anything else goes through mpack.
    if header[0] == 0x92 and header[1] < 128:
        size = len(header)
        if size == 3 and header[2] < 128:
            return header[1], header[2], False
        if size == 5 and header[2] == 0xCD or size == 7 and header[2] == 0xCE:
            return header[1], int.from_bytes(header[3:], "big"), False
    try:
        fields = mpack.unpackb(header)
    except Exception as exc:
        raise ProtocolError("undecodable frame header: %s" % exc)
    if (not isinstance(fields, list) or len(fields) not in (2, 3)
            or type(fields[0]) is not int or type(fields[1]) is not int):
        raise ProtocolError("malformed frame header %r" % (fields,))
    return fields[0], fields[1], len(fields) == 3


def tee_payload(route, chunk):
    """A TEE frame's payload: the packed route (``[own stream id or None, [[relay stream id,
    child's packed route], ...]]``), then the chunk."""
    return TEE_ROUTE.pack(len(route)) + route + chunk


def split_tee(payload):
    """A TEE payload's route (unpacked) and chunk (a view of the payload)."""
    size = TEE_ROUTE.unpack_from(payload, 0)[0]
    view = memoryview(payload)
    return mpack.unpackb(bytes(view[4:4 + size])), view[4 + size:]


def tee_frame_size(route_size, chunk_size):
    """The bytes of the one frame that carries a TEE of a route and a chunk of these sizes."""
    return PREFIX.size + len(_header(TEE, 0)) + TEE_ROUTE.size + route_size + chunk_size


def frames(kind, req_id, payload=b""):
    """The frames that carry one message, each as a tuple of buffers to write in order.

    A small message is one ``bytes`` object (one write). A large payload is never copied:
    it goes out as ``memoryview`` slices, one frame per CHUNK, each behind its own small
    header. Writers lock per frame, so other messages interleave with a large one.
    """
    size = len(payload)
    if size <= CHUNK:
        header = _header(kind, req_id)
        if size <= 65536:
            return [(PREFIX.pack(len(header), size) + header + payload,)]
        return [(PREFIX.pack(len(header), size) + header, payload)]
    view = memoryview(payload)
    more = _header(kind, req_id, more=True)
    last = _header(kind, req_id)
    out = []
    for start in range(0, size, CHUNK):
        piece = view[start:start + CHUNK]
        header = more if start + CHUNK < size else last
        out.append((PREFIX.pack(len(header), len(piece)) + header, piece))
    return out


def encode(kind, req_id, payload=b""):
    """All the buffers of one message, in order (``frames`` flattened)."""
    return [buf for frame in frames(kind, req_id, payload) for buf in frame]


class Decoder(object):
    """Turns a byte stream into frames; raises ProtocolError on anything malformed.

    ``feed(data)`` returns the complete frames the data finished. Partial frames wait in an
    internal buffer. ``max_message`` bounds all partly received messages together, so a
    hostile peer cannot make us buffer more than that; ``limits`` (kind -> bytes, such as
    ``AGENT_LIMITS``) bounds each message of the kinds it names, lower.
    """

    def __init__(self, max_message=MAX_MESSAGE, sync=False, limits=None):
        self.max_message = max_message
        self.limits = limits or {}
        self._buf = bytearray()
        self._partial = {}  # (kind, req_id) -> bytearray: the payload so far
        self._held = 0  # bytes held in all partial messages together
        self._synced = not sync
        self.preamble = b""  # junk seen before SYNC

    def feed(self, data):
        buf = self._buf
        buf += data
        if not self._synced:
            at = buf.find(SYNC)
            if at < 0:
                if len(buf) > MAX_PREAMBLE:
                    raise ProtocolError("no agent handshake in the first %d bytes" % MAX_PREAMBLE)
                return []
            self.preamble = bytes(buf[:at])
            del buf[:at + len(SYNC)]
            self._synced = True
        frames = []
        pos = 0
        end = len(buf)
        view = memoryview(buf)  # slices of a view copy once (bytes()), slices of buf twice
        try:
            while end - pos >= 6:
                hlen, plen = PREFIX.unpack_from(buf, pos)
                if hlen == 0 or hlen > 64 or plen > CHUNK:
                    raise ProtocolError("bad frame prefix (header %d bytes, payload %d bytes)" % (hlen, plen))
                stop = pos + 6 + hlen + plen
                if stop > end:
                    break
                frames.append(self._frame(bytes(view[pos + 6:pos + 6 + hlen]), bytes(view[pos + 6 + hlen:stop])))
                pos = stop
        finally:
            view.release()  # before buf is resized
        if pos:
            del buf[:pos]
        return [f for f in frames if f is not None]

    def take_large(self, at_least):
        """For a reader that fills buffers itself (``readinto``): when the buffer holds the
        start of one frame whose payload is ``at_least`` bytes or more, take that frame out.

        Returns ``(header, payload, filled)``: ``payload`` is a bytearray of the payload's
        full size holding ``filled`` bytes already; the caller reads the rest into it and
        passes both to ``finish_large``. Returns None otherwise (use ``feed``).
        """
        buf = self._buf
        if not self._synced or len(buf) < 6:
            return None
        hlen, plen = PREFIX.unpack_from(buf, 0)
        if hlen == 0 or hlen > 64 or plen > CHUNK:
            raise ProtocolError("bad frame prefix (header %d bytes, payload %d bytes)" % (hlen, plen))
        filled = len(buf) - 6 - hlen
        if plen < at_least or filled < 0 or filled >= plen:
            return None
        header = bytes(buf[6:6 + hlen])
        payload = bytearray(plen)
        payload[:filled] = buf[6 + hlen:]
        del buf[:]
        return header, payload, filled

    def finish_large(self, header, payload):
        """The frames a ``take_large`` payload completes, now filled (as from ``feed``)."""
        frame = self._frame(header, payload)
        return [] if frame is None else [frame]

    def _frame(self, header, payload):
        kind, req_id, more = _parse_header(header)
        key = (kind, req_id)
        limit = self.limits.get(kind)
        if more or key in self._partial:
            # one growing buffer per message, not a list of pieces: a message sent as
            # millions of 1-byte frames must cost its bytes, not an object per frame
            held = self._partial.get(key)
            if held is None:
                held = self._partial[key] = bytearray()
                self._held += PARTIAL_COST
            held += payload
            self._held += len(payload)
            if self._held > self.max_message:
                raise ProtocolError("messages in flight exceed the %d-byte limit" % self.max_message)
            if limit is not None and len(held) > limit:
                raise ProtocolError("a message of kind %d over its %d-byte limit" % (kind, limit))
            if more:
                return None
            payload = bytes(self._partial.pop(key))
            self._held -= len(payload) + PARTIAL_COST
        elif limit is not None and len(payload) > limit:
            raise ProtocolError("a message of kind %d over its %d-byte limit (%d bytes)" % (kind, limit, len(payload)))
        return Frame(key[0], key[1], payload)
