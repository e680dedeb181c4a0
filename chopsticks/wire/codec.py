"""Result values: a closed set of types carried in msgpack, and never pickles.

Remote-safe (standard library, Python 3.9 syntax). The agent encodes what a call returned,
with the plain-Python msgpack of ``mpack``; the controller decodes it with the msgpack
package's C codec, imported only when decoding. Decoding builds only the types listed below, so
a compromised host can send data but never objects with behaviour.

Supported, and what arrives on the controller:

    None, bool, int (any size), float, str, bytes  -> the same
    bytearray, memoryview                            -> bytes
    list, dict (keys of any supported hashable type) -> list, dict
    tuple, set, frozenset, complex                   -> the same
    datetime.datetime / date / time / timedelta      -> the same (tzinfo as a fixed offset)
    decimal.Decimal, uuid.UUID                       -> the same

A subclass of a supported type arrives as its base type: a namedtuple or ``os.uname()`` as
a tuple, an ``IntEnum`` as an int, a ``(str, Enum)`` member as its value, an ``OrderedDict``
as a dict. Anything else refuses to
encode with ``TypeError`` naming its type.
"""

import sys

from chopsticks.wire.mpack import UNICODE_ERRORS, ExtType, packb

# Ext type codes. Append only: both ends of a tunnel must agree.
TUPLE, SET, FROZENSET, BIGINT, COMPLEX, DATETIME, DATE, TIME, TIMEDELTA, DECIMAL, UUID = range(1, 12)

SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, "
    "complex, datetime.datetime, datetime.date, datetime.time, datetime.timedelta, "
    "decimal.Decimal, uuid.UUID"
)




def _pack_items(items):
    return packb(items, _default)


# A subclass of a native type travels as its base type's value. str.__str__, not str(): a
# ``(str, Enum)`` member's own __str__ says 'Colour.RED', its value is 'red'.
BASES = ((str, str.__str__), (bytes, bytes), (float, float), (dict, dict), (list, list))


def _default(obj):
    """Map the types msgpack cannot carry natively onto ext types (or onto a base type)."""
    if isinstance(obj, tuple):
        return ExtType(TUPLE, _pack_items(list(obj)))
    if isinstance(obj, int):
        if type(obj) is not int:
            return int(obj)
        return ExtType(BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
    if isinstance(obj, (set, frozenset)):
        return ExtType(FROZENSET if isinstance(obj, frozenset) else SET, _pack_items(list(obj)))
    # datetime, decimal and uuid cost milliseconds to import on a fresh agent; a value of
    # their types can only exist once they are imported.
    datetime = sys.modules.get("datetime")
    if datetime is not None and isinstance(obj, (datetime.date, datetime.time, datetime.timedelta)):
        if isinstance(obj, datetime.timedelta):
            return ExtType(TIMEDELTA, _pack_items([obj.days, obj.seconds, obj.microseconds]))
        code = DATETIME if isinstance(obj, datetime.datetime) else DATE if isinstance(obj, datetime.date) else TIME
        return ExtType(code, obj.isoformat().encode())
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        return ExtType(DECIMAL, str(obj).encode())
    uuid = sys.modules.get("uuid")
    if uuid is not None and isinstance(obj, uuid.UUID):
        return ExtType(UUID, obj.bytes)
    if isinstance(obj, complex):
        return ExtType(COMPLEX, _pack_items([obj.real, obj.imag]))
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    for base, convert in BASES:
        if isinstance(obj, base):
            return convert(obj)
    raise TypeError(
        "cannot send a value of type %s.%s back to the controller; supported types: %s"
        % (type(obj).__module__, type(obj).__qualname__, SUPPORTED)
    )


def encode(value):
    """Encode ``value`` to bytes; raise TypeError for a type outside the closed set."""
    return packb(value, _default)


class _Decoding:
    """One decode: the hooks, and a budget of containers so that a small hostile payload
    cannot unfold into a huge number of objects (an empty list is one byte on the wire and
    about 60 in memory). One container per CONTAINER_BYTES bytes is allowed: real data (a
    list of pairs of small ints is 3 bytes a pair) passes, a list of empty lists does not;
    what is left bounds a hostile result to roughly 30 times its size in memory."""

    CONTAINER_BYTES = 2

    def __init__(self, size):
        self.left = size // self.CONTAINER_BYTES + 64

    def spend(self):
        self.left -= 1
        if self.left < 0:
            raise ValueError("the value holds more containers than its size allows (a decompression bomb?)")

    def list_hook(self, items):
        self.spend()
        return items

    def pairs_hook(self, pairs):
        self.spend()
        return dict(pairs)

    def ext_hook(self, code, data):
        self.spend()
        try:
            decoder = EXT_DECODERS[code]
        except KeyError:
            raise ValueError("unknown ext type %d" % code)
        return decoder(self, data)

    def unpack(self, data):
        import msgpack  # the controller's C codec; the agent never decodes a result
        return msgpack.unpackb(data, ext_hook=self.ext_hook, list_hook=self.list_hook,
                               object_pairs_hook=self.pairs_hook, strict_map_key=False, raw=False,
                               unicode_errors=UNICODE_ERRORS)

    def items(self, data):
        items = self.unpack(data)
        if type(items) is not list:
            raise ValueError("malformed container payload")
        return items


def _timedelta(dec, data):
    days, seconds, micros = dec.items(data)
    return __import__("datetime").timedelta(days, seconds, micros)


def _complex(dec, data):
    real, imag = dec.items(data)
    return complex(real, imag)


EXT_DECODERS = {
    TUPLE: lambda dec, data: tuple(dec.items(data)),
    SET: lambda dec, data: set(dec.items(data)),
    FROZENSET: lambda dec, data: frozenset(dec.items(data)),
    BIGINT: lambda dec, data: int.from_bytes(data, "big", signed=True),
    COMPLEX: _complex,
    DATETIME: lambda dec, data: __import__("datetime").datetime.fromisoformat(data.decode()),
    DATE: lambda dec, data: __import__("datetime").date.fromisoformat(data.decode()),
    TIME: lambda dec, data: __import__("datetime").time.fromisoformat(data.decode()),
    TIMEDELTA: _timedelta,
    DECIMAL: lambda dec, data: __import__("decimal").Decimal(data.decode()),
    UUID: lambda dec, data: __import__("uuid").UUID(bytes=data),
}


def decode(data):
    """Decode bytes made by ``encode``. Raises ValueError (or TypeError) on anything else."""
    return _Decoding(len(data)).unpack(data)
