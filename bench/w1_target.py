"""Remote target for the W1 (call latency) benchmarks, ours and the peers'.

Every peer calls ``two()`` in its remote Python process. mitogen and
chopsticks 1.0 import this module on the remote side on demand (they ship
its source from the local process); execnet gets the equivalent source
string via ``remote_exec``.
"""


def two():
    return 1 + 1


def origin():
    """Where the remote side got this module from (sanity check, not timed)."""
    return str(globals().get('__file__'))
