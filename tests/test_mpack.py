"""The agent's own msgpack codec (wire/mpack.py) against the msgpack package: pure format logic."""

import random

import msgpack
import pytest

from chopsticks.wire import mpack

EDGE_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 63, 2 ** 64 - 1,
             -1, -32, -33, -128, -129, -32768, -32769, -2 ** 31, -2 ** 31 - 1, -2 ** 63]
SIZES = [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536]


def _value(rnd, depth=0):
    kind = rnd.randrange(8 if depth < 3 else 6)
    if kind == 0:
        return rnd.choice([None, True, False])
    if kind == 1:
        return rnd.choice(EDGE_INTS + [rnd.randrange(-2 ** 63, 2 ** 64)])
    if kind == 2:
        return rnd.choice([0.0, -0.0, 1.5, 1e300, float("inf"), rnd.random()])
    if kind == 3:
        return "".join(chr(rnd.randrange(32, 0x3000)) for _ in range(rnd.choice(SIZES[:8])))
    if kind == 4:
        return bytes(rnd.randrange(256) for _ in range(rnd.choice(SIZES)))
    if kind == 5:
        return mpack.ExtType(rnd.randrange(128), b"e" * rnd.choice([0, 1, 2, 3, 4, 8, 16, 17, 256]))
    if kind == 6:
        return [_value(rnd, depth + 1) for _ in range(rnd.choice([0, 1, 15, 16, 17]))]
    return {"k%d" % i: _value(rnd, depth + 1) for i in range(rnd.choice([0, 1, 15, 16, 17]))}


def _theirs(value):
    if isinstance(value, mpack.ExtType):
        return msgpack.ExtType(value.code, value.data)
    if isinstance(value, list):
        return [_theirs(v) for v in value]
    if isinstance(value, dict):
        return {k: _theirs(v) for k, v in value.items()}
    return value


def test_packs_byte_for_byte_as_msgpack_and_reads_what_it_writes():
    """Random values of every kind and size boundary pack exactly as msgpack packs them, and
    each codec reads the other's bytes back to the same value."""
    rnd = random.Random(13)
    for _ in range(400):
        value = _value(rnd)
        ours = mpack.packb(value)
        assert ours == msgpack.packb(_theirs(value), use_bin_type=True)
        assert mpack.unpackb(ours) == value
        assert msgpack.unpackb(ours, raw=False, strict_map_key=False) == _theirs(value)


def test_big_containers_and_strings_use_their_32_bit_forms():
    """Sizes past 16 bits (arrays, maps, str, bin) round-trip through both codecs."""
    for value in ([0] * 70000, {i: None for i in range(70000)}, "s" * 70000, b"b" * 70000):
        ours = mpack.packb(value)
        assert ours == msgpack.packb(value, use_bin_type=True)
        assert mpack.unpackb(ours) == value


def test_default_replaces_what_it_cannot_pack_and_subclasses_go_to_it():
    """Only exact types pack as themselves; the rest go through ``default``, which must
    return something packable."""
    class Text(str):
        pass

    seen = []

    def default(obj):
        seen.append(type(obj))
        return mpack.ExtType(1, str(obj).encode()) if isinstance(obj, (tuple, int)) else str.__str__(obj)

    assert mpack.unpackb(mpack.packb([(1, 2), Text("t"), 2 ** 70], default)) == [
        mpack.ExtType(1, b"(1, 2)"), "t", mpack.ExtType(1, str(2 ** 70).encode())]
    assert seen == [tuple, Text, int]
    with pytest.raises(TypeError, match="type object"):
        mpack.packb(object())
    with pytest.raises(TypeError, match="type set"):
        mpack.packb({1}, default=lambda obj: obj)


def test_surrogate_escapes_survive():
    """A str holding surrogate escapes (a non-UTF-8 file name) packs and reads back; bytes
    that are not UTF-8 read as such escapes, as the controller's decoder reads them."""
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert mpack.unpackb(mpack.packb(name)) == name
    assert mpack.unpackb(b"\xa2\xff\xfe") == b"\xff\xfe".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("data, why", [
    (b"", "truncated"),
    (b"\x92\x01", "truncated"),
    (b"\xdb\xff\xff\xff\xff", "truncated"),
    (b"\xc1", "invalid msgpack type byte 0xc1"),
    (b"\x01\x02", "1 bytes of extra data"),
    (b"\x91" * 300 + b"\x01", "nested more than 256 levels"),
    (b"\x81\x90\x01", "unhashable type list"),
    (b"\xd4\xff\x00", "ext type code"),
])
def test_malformed_bytes_are_a_value_error(data, why):
    """Truncated, invalid, trailing, too deep, unhashable keys, negative ext codes."""
    with pytest.raises(ValueError, match=why):
        mpack.unpackb(data)


def test_packing_too_deep_is_a_value_error():
    """A value nested past msgpack's own limit is refused, not a crash."""
    value = []
    for _ in range(600):
        value = [value]
    with pytest.raises(ValueError, match="nested more than 511"):
        mpack.packb(value)
