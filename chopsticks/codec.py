"""Result values: a closed set of types carried in msgpack, and never pickles.

Remote-safe (standard library plus msgpack, Python 3.8 syntax). The agent encodes what a
call returned; the controller decodes it. Decoding builds only the types listed below, so
a compromised host can send data but never objects with behaviour.

Supported, and what arrives on the controller:

    None, bool, int (any size), float, str, bytes  -> the same
    bytearray, memoryview                            -> bytes
    list, dict (keys of any supported hashable type) -> list, dict
    tuple, set, frozenset, complex                   -> the same
    datetime.datetime / date / time / timedelta      -> the same (tzinfo as a fixed offset)
    decimal.Decimal, uuid.UUID                       -> the same

A subclass of a supported type arrives as its base type: a namedtuple or ``os.uname()`` as
a tuple, an ``IntEnum`` as an int, an ``OrderedDict`` as a dict. Anything else refuses to
encode with ``TypeError`` naming its type.
"""

import datetime
import sys

import msgpack

# Ext type codes. Append only: both ends of a tunnel must agree.
TUPLE, SET, FROZENSET, BIGINT, COMPLEX, DATETIME, DATE, TIME, TIMEDELTA, DECIMAL, UUID = range(1, 12)

SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset, "
    "complex, datetime.datetime, datetime.date, datetime.time, datetime.timedelta, "
    "decimal.Decimal, uuid.UUID"
)


def _pack_items(items):
    return msgpack.packb(items, default=_default, strict_types=True, use_bin_type=True)


def _default(obj):
    """Map the types msgpack cannot carry natively onto ext types (or onto a base type)."""
    if isinstance(obj, tuple):
        return msgpack.ExtType(TUPLE, _pack_items(list(obj)))
    if isinstance(obj, int):
        if type(obj) is not int:
            return int(obj)
        return msgpack.ExtType(BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
    if isinstance(obj, (set, frozenset)):
        return msgpack.ExtType(FROZENSET if isinstance(obj, frozenset) else SET, _pack_items(list(obj)))
    if isinstance(obj, datetime.datetime):
        return msgpack.ExtType(DATETIME, obj.isoformat().encode())
    if isinstance(obj, datetime.date):
        return msgpack.ExtType(DATE, obj.isoformat().encode())
    if isinstance(obj, datetime.time):
        return msgpack.ExtType(TIME, obj.isoformat().encode())
    if isinstance(obj, datetime.timedelta):
        return msgpack.ExtType(TIMEDELTA, _pack_items([obj.days, obj.seconds, obj.microseconds]))
    # decimal and uuid cost milliseconds to import on a fresh agent; a value of their types
    # can only exist once they are imported.
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(DECIMAL, str(obj).encode())
    uuid = sys.modules.get("uuid")
    if uuid is not None and isinstance(obj, uuid.UUID):
        return msgpack.ExtType(UUID, obj.bytes)
    if isinstance(obj, complex):
        return msgpack.ExtType(COMPLEX, _pack_items([obj.real, obj.imag]))
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    for base in (str, bytes, float, dict, list):
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(
        "cannot send a value of type %s.%s back to the controller; supported types: %s"
        % (type(obj).__module__, type(obj).__qualname__, SUPPORTED)
    )


def encode(value):
    """Encode ``value`` to bytes; raise TypeError for a type outside the closed set."""
    return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)


def _unpack_items(data):
    items = decode(data)
    if type(items) is not list:
        raise ValueError("malformed container payload")
    return items


def _timedelta(data):
    days, seconds, micros = _unpack_items(data)
    return datetime.timedelta(days, seconds, micros)


def _complex(data):
    real, imag = _unpack_items(data)
    return complex(real, imag)


EXT_DECODERS = {
    TUPLE: lambda data: tuple(_unpack_items(data)),
    SET: lambda data: set(_unpack_items(data)),
    FROZENSET: lambda data: frozenset(_unpack_items(data)),
    BIGINT: lambda data: int.from_bytes(data, "big", signed=True),
    COMPLEX: _complex,
    DATETIME: lambda data: datetime.datetime.fromisoformat(data.decode()),
    DATE: lambda data: datetime.date.fromisoformat(data.decode()),
    TIME: lambda data: datetime.time.fromisoformat(data.decode()),
    TIMEDELTA: _timedelta,
    DECIMAL: lambda data: __import__("decimal").Decimal(data.decode()),
    UUID: lambda data: __import__("uuid").UUID(bytes=data),
}


def _ext_hook(code, data):
    try:
        decoder = EXT_DECODERS[code]
    except KeyError:
        raise ValueError("unknown ext type %d" % code)
    return decoder(data)


def decode(data):
    """Decode bytes made by ``encode``. Raises ValueError (or TypeError) on anything else."""
    return msgpack.unpackb(data, ext_hook=_ext_hook, strict_map_key=False, raw=False)
