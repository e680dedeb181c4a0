"""The remote half of chopsticks: the agent built on the fly inside the remote ``python3``.

Everything under this package is remote-safe: standard library only, Python 3.9 syntax,
small.
"""
