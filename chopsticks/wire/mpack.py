"""The msgpack format, written in plain Python for the agent. Remote-safe.

The agent packs its messages and results with this module instead of the msgpack package:
a remote has no msgpack of its own, and the package's pure-Python codec costs a fresh agent
milliseconds to import (``datetime``, ``namedtuple``, its own modules), more than half of what
the agent's start costs beyond the interpreter's. What is written here is standard msgpack
(the 2013 specification with ``bin`` and ``str`` kept apart), so the controller reads it with
the msgpack package's C codec, and this module reads what that codec writes.

``packb(obj, default)`` packs ``None``, ``bool``, ``int`` (64 bits), ``float`` (as a double),
``str`` (UTF-8, surrogate escapes kept), ``bytes``, ``list``, ``dict`` and ``ExtType`` by
their exact type; any other object, a subclass included, is given to ``default``, whose
return value is packed instead (``TypeError`` when there is no ``default``, or when it returns
another object of no packable type). ``unpackb(data)`` reads one whole object: arrays arrive
as lists, maps as dicts, ext values as ``ExtType``; malformed, truncated or trailing bytes and
nesting deeper than ``READ_DEPTH`` raise ``ValueError`` (packing: deeper than ``MAX_DEPTH``).
"""

from _struct import Struct

MAX_DEPTH = 511  # packing: the msgpack package's own nesting limit
READ_DEPTH = 256  # unpacking: what is read is a peer's small control messages, never deep
# Strings travel as UTF-8; a str holding surrogate escapes (a file name that is not UTF-8,
# from os.listdir) survives the round trip instead of failing the call.
UNICODE_ERRORS = "surrogateescape"

_DOUBLE = Struct(">d")
_FLOAT = Struct(">f")


class ExtType(tuple):
    """An application-defined value: ``(code, data)``, code 0-127, data bytes."""

    __slots__ = ()

    def __new__(cls, code, data):
        if type(code) is not int or not 0 <= code <= 127:
            raise ValueError("an ext type code is an int from 0 to 127, not %r" % (code,))
        if type(data) is not bytes:
            raise TypeError("ext data must be bytes, not %s" % type(data).__name__)
        return tuple.__new__(cls, (code, data))

    code = property(lambda self: self[0])
    data = property(lambda self: self[1])

    def __repr__(self):
        return "ExtType(code=%d, data=%r)" % self


# -- packing ----------------------------------------------------------------------------------

def _sized(out, size, small, base8, name):
    """The head of a str, bin, array or map of ``size`` items: ``small`` is the fix form's
    first byte and limit (or None), ``base8`` the code of its 8-bit length form (16 and 32
    follow it)."""
    if small is not None and size < small[1]:
        out.append(bytes((small[0] | size,)))
    elif base8 is not None and size < 0x100:
        out.append(bytes((base8, size)))
    elif size < 0x10000:
        out.append(bytes((base8 + 1 if base8 is not None else small[2],)) + size.to_bytes(2, "big"))
    elif size < 0x100000000:
        out.append(bytes((base8 + 2 if base8 is not None else small[2] + 1,)) + size.to_bytes(4, "big"))
    else:
        raise ValueError("%s of %d items is too large for msgpack" % (name, size))


# (fix form's first byte, fix limit, 16-bit code) for the kinds with no 8-bit length form
_FIXARRAY = (0x90, 16, 0xDC)
_FIXMAP = (0x80, 16, 0xDE)


def _pack_int(obj, out, default, depth, limit):
    if 0 <= obj < 0x80:
        out.append(bytes((obj,)))
    elif -32 <= obj < 0:
        out.append(bytes((obj & 0xFF,)))
    elif 0 <= obj < 0x10000000000000000:
        for code, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if obj < 1 << (8 * size):
                out.append(bytes((code,)) + obj.to_bytes(size, "big"))
                return
    elif -0x8000000000000000 <= obj < 0:
        for code, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if obj >= -(1 << (8 * size - 1)):
                out.append(bytes((code,)) + obj.to_bytes(size, "big", signed=True))
                return
    else:
        _pack_other(obj, out, default, depth, limit)


def _pack_str(obj, out, default, depth, limit):
    data = obj.encode("utf-8", UNICODE_ERRORS)
    size = len(data)
    if size < 32:
        out.append(bytes((0xA0 | size,)) + data)
    else:
        _sized(out, size, None, 0xD9, "a str")
        out.append(data)


def _pack_bytes(obj, out, default, depth, limit):
    _sized(out, len(obj), None, 0xC4, "a bytes")
    out.append(obj)


def _pack_list(obj, out, default, depth, limit):
    if depth >= limit:
        raise ValueError("the value is nested more than %d levels deep" % limit)
    _sized(out, len(obj), _FIXARRAY, None, "a list")
    for item in obj:
        _PACKERS.get(type(item), _pack_other)(item, out, default, depth + 1, limit)


def _pack_dict(obj, out, default, depth, limit):
    if depth >= limit:
        raise ValueError("the value is nested more than %d levels deep" % limit)
    _sized(out, len(obj), _FIXMAP, None, "a dict")
    for key, value in obj.items():
        _PACKERS.get(type(key), _pack_other)(key, out, default, depth + 1, limit)
        _PACKERS.get(type(value), _pack_other)(value, out, default, depth + 1, limit)


def _pack_ext(obj, out, default, depth, limit):
    code, data = obj
    size = len(data)
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(size)
    if fixed is not None:
        out.append(bytes((fixed, code)))
    else:
        _sized(out, size, None, 0xC7, "an ext value")
        out.append(bytes((code,)))
    out.append(data)


def _pack_other(obj, out, default, depth, limit):
    replaced = obj if default is None else default(obj)
    if replaced is obj or type(replaced) not in _PACKERS:
        raise TypeError("msgpack cannot pack an object of type %s" % type(obj).__name__)
    _PACKERS[type(replaced)](replaced, out, default, depth, limit)


_PACKERS = {
    type(None): lambda obj, out, default, depth, limit: out.append(b"\xc0"),
    bool: lambda obj, out, default, depth, limit: out.append(b"\xc3" if obj else b"\xc2"),
    int: _pack_int,
    float: lambda obj, out, default, depth, limit: out.append(b"\xcb" + _DOUBLE.pack(obj)),
    str: _pack_str,
    bytes: _pack_bytes,
    list: _pack_list,
    dict: _pack_dict,
    ExtType: _pack_ext,
}


def packb(obj, default=None, max_depth=MAX_DEPTH):
    """``obj`` in msgpack; see the module's text for what packs. ``max_depth``: the deepest
    nesting allowed (``READ_DEPTH``: what ``unpackb`` reads back)."""
    out = []
    _PACKERS.get(type(obj), _pack_other)(obj, out, default, 0, max_depth)
    return b"".join(out)


# -- unpacking --------------------------------------------------------------------------------

class _Reader(object):
    """One ``unpackb``: the bytes and where reading has got to."""

    __slots__ = ("data", "pos")

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, size):
        start = self.pos
        end = self.pos = start + size
        if end > len(self.data):
            raise ValueError("truncated msgpack data")
        return self.data[start:end]

    def uint(self, size):
        return int.from_bytes(self.take(size), "big")

    def read(self, depth):
        data = self.data
        if self.pos >= len(data):
            raise ValueError("truncated msgpack data")
        code = data[self.pos]
        self.pos += 1
        if code < 0x80:
            return code
        if code >= 0xE0:
            return code - 0x100
        if 0xA0 <= code < 0xC0:
            return self.text(code & 0x1F)
        if 0x90 <= code < 0xA0:
            return self.array(code & 0x0F, depth)
        if 0x80 <= code < 0x90:
            return self.map(code & 0x0F, depth)
        try:
            how, arg = _CODES[code]
        except KeyError:
            raise ValueError("invalid msgpack type byte 0x%02x" % code)
        return how(self, arg, depth)

    def text(self, size):
        return str(self.take(size), "utf-8", UNICODE_ERRORS)

    def array(self, size, depth):
        if depth >= READ_DEPTH:
            raise ValueError("msgpack data nested more than %d levels deep" % READ_DEPTH)
        result = []
        for _ in range(size):
            result.append(self.read(depth + 1))
        return result

    def map(self, size, depth):
        if depth >= READ_DEPTH:
            raise ValueError("msgpack data nested more than %d levels deep" % READ_DEPTH)
        result = {}
        for _ in range(size):
            key = self.read(depth + 1)
            try:
                result[key] = self.read(depth + 1)
            except TypeError:
                raise ValueError("a msgpack map key of unhashable type %s" % type(key).__name__)
        return result

    def ext(self, size):
        code = self.uint(1)
        return ExtType(code - 0x100 if code >= 0x80 else code, bytes(self.take(size)))


def _signed(reader, size):
    return int.from_bytes(reader.take(size), "big", signed=True)


_CODES = {
    0xC0: (lambda r, arg, depth: None, None),
    0xC2: (lambda r, arg, depth: False, None),
    0xC3: (lambda r, arg, depth: True, None),
    0xCA: (lambda r, arg, depth: _FLOAT.unpack(r.take(4))[0], None),
    0xCB: (lambda r, arg, depth: _DOUBLE.unpack(r.take(8))[0], None),
}
for _size_code, _size in enumerate((1, 2, 4, 8)):
    _CODES[0xCC + _size_code] = (lambda r, size, depth: r.uint(size), _size)
    _CODES[0xD0 + _size_code] = (lambda r, size, depth: _signed(r, size), _size)
for _size_code, _size in enumerate((1, 2, 4)):
    _CODES[0xD9 + _size_code] = (lambda r, size, depth: r.text(r.uint(size)), _size)
    _CODES[0xC4 + _size_code] = (lambda r, size, depth: bytes(r.take(r.uint(size))), _size)
    _CODES[0xC7 + _size_code] = (lambda r, size, depth: r.ext(r.uint(size)), _size)
for _size_code, _size in enumerate((2, 4)):
    _CODES[0xDC + _size_code] = (lambda r, size, depth: r.array(r.uint(size), depth), _size)
    _CODES[0xDE + _size_code] = (lambda r, size, depth: r.map(r.uint(size), depth), _size)
for _size_code, _size in enumerate((1, 2, 4, 8, 16)):
    _CODES[0xD4 + _size_code] = (lambda r, size, depth: r.ext(size), _size)


def unpackb(data):
    """The one object msgpack ``data`` holds (see the module's text)."""
    reader = _Reader(data)
    obj = reader.read(0)
    if reader.pos != len(data):
        raise ValueError("%d bytes of extra data after the msgpack object" % (len(data) - reader.pos))
    return obj
