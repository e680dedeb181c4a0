"""Values the CLI tests have hosts return or print. Called through ``python -m chopsticks.fanout call``;
the remote imports this module on demand."""

import datetime
import decimal
import enum
import math
import sys
import uuid


def odd_values():
    """One of each type a result may hold, with the awkward cases of each."""
    return {
        "big": math.factorial(2000),  # 5,736 digits, past Python's int -> str limit
        "small": -12345678901234567890,
        "floats": [math.nan, math.inf, -math.inf, 0.5],
        "decimal": decimal.Decimal("1.10"),
        "datetime": datetime.datetime(2026, 12, 3, 10, 0, 0, 500, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
        "date": datetime.date(2026, 12, 3),
        "time": datetime.time(23, 59, 1),
        "timedelta": datetime.timedelta(days=1, seconds=1, microseconds=500000),
        "bytes": b"hi\xff\x00",
        "text": "caf\xe9 \udcff",  # a surrogate escape: a name that was not UTF-8
        "complex": complex(1, -2),
        "set": {"b", "c", "a"},
        "frozenset": frozenset([3, 1, 2]),
        "tuple": (1, "two"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "keys": {1: "int", None: "none", (1, 2): "tuple", 2.5: "float", False: "bool"},
    }


def nested(depth):
    """A list ``depth`` levels deep (padded so the codec's container budget lets it through)."""
    value = []
    for _ in range(depth):
        value = [value]
    return ["padding" * depth, value]


def shout(text):
    """Print ``text`` on the remote's stderr (remote output) and return it."""
    print(text, file=sys.stderr, flush=True)
    return text


def fail(message):
    raise ValueError(message)


class Colour(str, enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


class Ratio(float, enum.Enum):
    HALF = 0.5


def enums():
    """Members of mixed-in enums, as values and as keys."""
    return [Colour.RED, Size.BIG, Ratio.HALF, {Colour.RED: Colour.RED}]
