"""Logging for a library: structlog events when the application configured structlog. Controller-side.

The library never configures logging. Its own events (``tunnel_connected``,
``tunnel_closed``, ``module_served``, ``protocol_violation``) go to
``structlog.get_logger("chopsticks")`` only when the application has configured structlog; otherwise they are dropped, so importing chopsticks never prints.
Remote output is different: a user who prints on a remote host expects to see it, so each
line is a ``remote_output`` event when structlog is configured, and otherwise is written to
the controller's stderr as ``[name] line``.
"""

import sys

import structlog


def event(name: str, **fields) -> None:
    """Emit a library event (debug level), if the application configured structlog."""
    if structlog.is_configured():
        structlog.get_logger("chopsticks").debug(name, **fields)


def warning(name: str, **fields) -> None:
    """Emit a library warning, if the application configured structlog."""
    if structlog.is_configured():
        structlog.get_logger("chopsticks").warning(name, **fields)


def remote_output(host: str, line: str) -> None:
    """Show one line of a remote agent's stderr (or stdout) with its host's name."""
    if structlog.is_configured():
        structlog.get_logger("chopsticks").info("remote_output", host=host, line=line)
    else:
        try:
            sys.stderr.write("[%s] %s\n" % (host, line))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
