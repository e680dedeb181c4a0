"""Transports: byte pipes to a remote agent's stdin, stdout and stderr. No parsing here.

A transport's pipe offers ``read(n)``, ``read_stderr(n)`` (``b""`` at end of stream),
``write(buffer)`` (all of it), ``close_stdin()``, ``exit_status(timeout)`` and ``close()``;
each may block the calling greenlet, never the hub. ``connection.py`` drives them.
"""
