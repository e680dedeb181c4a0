"""Pure protocol logic: frames and the safe value codec, in memory (no I/O involved)."""

import datetime
import os

import msgpack
import pytest

from chopsticks.wire import codec, protocol


def _wire(*messages):
    return b"".join(bytes(buf) for kind, req_id, payload in messages
                    for buf in protocol.encode(kind, req_id, payload))


def test_frames_round_trip_in_any_split():
    """Frames survive being fed one byte or many at a time, chunked ones included."""
    big = os.urandom(protocol.CHUNK * 2 + 5)
    messages = [(protocol.CALL, 1, b"a"), (protocol.RESULT, 70000, big), (protocol.HELLO, 2 ** 31, b""),
                (protocol.ERROR, 127, b"x" * 70000)]
    data = _wire(*messages)
    for step in (1, 7, 4096, len(data)):
        if step == 1:
            data_small = _wire(*messages[:1] + messages[2:])
            chunks = [data_small[i:i + 1] for i in range(len(data_small))]
            expected = messages[:1] + messages[2:]
        else:
            chunks = [data[i:i + step] for i in range(0, len(data), step)]
            expected = messages
        decoder = protocol.Decoder()
        frames = [f for chunk in chunks for f in decoder.feed(chunk)]
        assert [(f.kind, f.req_id, f.payload) for f in frames] == expected


def test_large_payloads_are_not_copied_when_encoded():
    """A chunked payload goes out as memoryview slices of the caller's buffer."""
    payload = bytearray(protocol.CHUNK * 3)
    buffers = protocol.encode(protocol.RESULT, 1, payload)
    views = [b for b in buffers if isinstance(b, memoryview)]
    assert len(views) == 3 and all(v.obj is payload for v in views)


def test_preamble_before_sync_is_skipped_and_kept():
    """Junk a login shell prints before the agent's SYNC is set aside, not parsed."""
    decoder = protocol.Decoder(sync=True)
    assert decoder.feed(b"Welcome\n\x92\x01\x02 junk") == []
    frames = decoder.feed(protocol.SYNC + _wire((protocol.HELLO, 0, b"hi")))
    assert frames == [(protocol.HELLO, 0, b"hi")]
    assert decoder.preamble == b"Welcome\n\x92\x01\x02 junk"


def test_endless_preamble_is_refused():
    """A stream that never sends SYNC is refused once it passes MAX_PREAMBLE."""
    decoder = protocol.Decoder(sync=True)
    with pytest.raises(protocol.ProtocolError):
        for _ in range(protocol.MAX_PREAMBLE // 65536 + 2):
            decoder.feed(b"y" * 65536)


@pytest.mark.parametrize("data", [
    protocol.PREFIX.pack(0, 0),
    protocol.PREFIX.pack(3, protocol.CHUNK + 1) + b"\x92\x01\x01",
    protocol.PREFIX.pack(1, 0) + b"\xc1",
    protocol.PREFIX.pack(2, 0) + msgpack.packb("x"),
    protocol.PREFIX.pack(4, 0) + msgpack.packb([1, "a"]),
])
def test_malformed_frames_raise(data):
    """Bad prefixes, oversized payloads and malformed headers raise ProtocolError."""
    with pytest.raises(protocol.ProtocolError):
        protocol.Decoder().feed(data)


def test_reassembly_is_bounded():
    """Chunks of unfinished messages may not add up past max_message."""
    decoder = protocol.Decoder(max_message=3 * 1024 + protocol.PARTIAL_COST)
    header = msgpack.packb([protocol.RESULT, 5, 1])
    piece = protocol.PREFIX.pack(len(header), 1024) + header + b"\0" * 1024
    decoder.feed(piece * 3)
    with pytest.raises(protocol.ProtocolError):
        decoder.feed(piece)


def test_many_tiny_partial_messages_count_what_they_cost():
    """A flood of 1-byte unfinished messages is refused long before it costs more than max_message."""
    import tracemalloc
    decoder = protocol.Decoder(max_message=1 << 20)
    frames = b"".join(protocol.PREFIX.pack(len(h), 1) + h + b"x"  # one request id per frame
                      for h in (msgpack.packb([protocol.RESULT, req_id, 1]) for req_id in range(1, 20000)))
    tracemalloc.start()
    try:
        with pytest.raises(protocol.ProtocolError):
            for start in range(0, len(frames), 65536):
                decoder.feed(frames[start:start + 65536])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20


@pytest.mark.parametrize("kind", sorted(protocol.AGENT_LIMITS))
def test_per_kind_limits_refuse_big_control_messages(kind):
    """A message over its kind's limit is refused, whole or split, though under max_message."""
    limit = protocol.AGENT_LIMITS[kind]
    for pieces in (1, 3):
        decoder = protocol.Decoder(max_message=64 << 20, limits=protocol.AGENT_LIMITS)
        payload = b"\0" * (limit + 1)
        if pieces == 1 and limit + 1 <= protocol.CHUNK:
            data = b"".join(protocol.encode(kind, 1, payload))
        else:
            step = min(limit // 2 + 1, protocol.CHUNK)  # no frame carries more than CHUNK
            data = b""
            for start in range(0, len(payload), step):
                more = start + step < len(payload)
                header = msgpack.packb([kind, 1, 1] if more else [kind, 1])
                piece = payload[start:start + step]
                data += protocol.PREFIX.pack(len(header), len(piece)) + header + piece
        with pytest.raises(protocol.ProtocolError) as info:
            decoder.feed(data)
        assert "limit" in str(info.value)
    ok = protocol.Decoder(limits=protocol.AGENT_LIMITS).feed(b"".join(protocol.encode(kind, 1, b"\0" * limit)))
    assert len(ok) == 1 and len(ok[0].payload) == limit


def test_codec_refuses_types_outside_the_closed_set():
    """Encoding an arbitrary object raises TypeError naming its type."""
    with pytest.raises(TypeError) as info:
        codec.encode({"x": [object()]})
    assert "builtins.object" in str(info.value)


def test_codec_turns_subclasses_into_base_types():
    """namedtuples, OrderedDicts and IntEnums arrive as tuple, dict and int."""
    import collections
    import enum
    Point = collections.namedtuple("Point", "x y")
    Color = enum.IntEnum("Color", "RED")
    value = codec.decode(codec.encode([Point(1, 2), collections.OrderedDict(a=1), Color.RED, os.uname()]))
    assert value[:3] == [(1, 2), {"a": 1}, 1]
    assert type(value[0]) is tuple and type(value[2]) is int and type(value[3]) is tuple


@pytest.mark.parametrize("payload", [
    msgpack.packb(msgpack.ExtType(42, b"")),
    msgpack.packb(msgpack.ExtType(codec.SET, msgpack.packb([[1]]))),
    msgpack.packb(msgpack.ExtType(codec.DATETIME, b"not a date")),
    msgpack.packb(msgpack.ExtType(codec.TUPLE, b"\xc1")),
    b"\x80\x04\x95",
])
def test_codec_decode_rejects_crafted_input(payload):
    """Unknown ext codes, unhashable set members, bad dates and junk all raise."""
    with pytest.raises(Exception):
        codec.decode(payload)


def test_codec_keeps_timezones_as_fixed_offsets():
    """An aware datetime keeps its UTC offset."""
    tz = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=tz)
    assert codec.decode(codec.encode(when)) == when
    assert codec.decode(codec.encode(when)).utcoffset() == tz.utcoffset(None)


def test_a_large_frame_can_be_read_in_place():
    """take_large hands over a big frame's payload buffer; the reader fills it; finish_large
    gives the same frame that feed would have given."""
    from chopsticks.wire import protocol
    payload = bytes(range(256)) * 1024  # 256 KiB
    wire = b"".join(protocol.encode(protocol.STREAM, 7, payload)) + b"".join(protocol.encode(protocol.CREDIT, 7, b"x"))
    decoder = protocol.Decoder()
    assert decoder.feed(wire[:1000]) == []
    assert decoder.take_large(1 << 20) is None  # smaller than asked for: use feed
    header, buffer, filled = decoder.take_large(64 << 10)
    rest = memoryview(wire)[1000:]
    need = len(buffer) - filled
    buffer[filled:] = rest[:need]
    frames = decoder.finish_large(header, buffer)
    assert [(f.kind, f.req_id, bytes(f.payload)) for f in frames] == [(protocol.STREAM, 7, payload)]
    assert decoder.feed(bytes(rest[need:])) == [(protocol.CREDIT, 7, b"x")]
    assert decoder.take_large(1) is None  # nothing buffered
