"""Logging for a library: structlog events when the application configured structlog. Controller-side.

The library never configures logging. Its own events (``tunnel_connected``,
``tunnel_closed``, ``module_served``, ``protocol_violation``) go to
``structlog.get_logger("chopsticks")`` only when the application has configured structlog; otherwise they are dropped, so importing chopsticks never prints.
Remote output is different: a user who prints on a remote host expects to see it, so each
line is a ``remote_output`` event when structlog is configured, and otherwise is written to
the controller's stderr as ``[name] line``, with control characters shown as escapes
(``visible``): a host's output cannot move the cursor, recolour the terminal or, with a
``\r``, overwrite another host's line. ``escape_for_terminal`` does the same for a console
renderer of the application's own structlog set-up.
"""

import sys
from typing import Any, Callable, Dict, Optional

import structlog

# What a terminal would act on instead of showing: C0 controls but the tab, DEL and C1 controls
# (0x9b is a CSI in some terminals), line and paragraph separators, bidirectional overrides,
# and lone surrogates (a surrogate escape, from bytes that were not UTF-8, shows as that byte).
_VISIBLE = {code: "\\x%02x" % code for code in [*range(0x20), *range(0x7f, 0xa0)] if code != 0x09}
_VISIBLE.update({0x0a: "\\n", 0x0d: "\\r"})
_VISIBLE.update({code: "\\u%04x" % code for code in [0x2028, 0x2029, *range(0x202a, 0x202f), *range(0x2066, 0x206a),
                                                      *range(0xd800, 0xe000)]})
_VISIBLE.update({code: "\\x%02x" % (code - 0xdc00) for code in range(0xdc80, 0xdd00)})


def visible(text: str) -> str:
    """``text`` safe to print on a terminal: control characters as escapes (``\\r``, ``\\x1b``)."""
    return text.translate(_VISIBLE)


# structlog's ConsoleRenderer shows a string with one of these as its repr(), which escapes
# every control character itself; any other string it shows as it is.
_REPR_BY_CONSOLE = frozenset(" \t=\r\n\"'")


def escape_for_terminal(logger: Any, method: str, event: Dict[str, Any]) -> Dict[str, Any]:
    """A structlog processor, just before a ``ConsoleRenderer``: string values it would show as
    they are made ``visible``."""
    return {key: visible(value) if isinstance(value, str) and not _REPR_BY_CONSOLE & set(value) else value
            for key, value in event.items()}


# Where a shard process sends its events instead (``forward``), for its driver to ``replay``.
_forward: Optional[Callable[[str, Dict[str, Any]], None]] = None
LEVELS = ("debug", "info", "warning")


def _log(level: str, name: str, fields: Dict[str, Any]) -> bool:
    """Emit one event: to the driver from a shard, else to structlog if the application
    configured it; False when it went nowhere."""
    if _forward is not None:
        _forward(level, dict({key: value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
                              for key, value in fields.items()}, event=name))
        return True
    if structlog.is_configured():
        getattr(structlog.get_logger("chopsticks"), level)(name, **fields)
        return True
    return False


def event(name: str, **fields) -> None:
    """Emit a library event (debug level), if the application configured structlog."""
    _log("debug", name, fields)


def warning(name: str, **fields) -> None:
    """Emit a library warning, if the application configured structlog."""
    _log("warning", name, fields)


def remote_output(host: str, line: str) -> None:
    """Show one line of a remote agent's stderr (or stdout) with its host's name."""
    if not _log("info", "remote_output", {"host": host, "line": line}):
        try:
            sys.stderr.write("[%s] %s\n" % (visible(host), visible(line)))
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def forward(send: Callable[[str, Dict[str, Any]], None]) -> None:
    """In a shard process: every event goes to ``send(level, fields)`` (its name as
    ``fields["event"]``, values as plain data), for its driver to ``replay``; nothing is
    printed here, and structlog is left as it is."""
    global _forward
    _forward = send


def replay(level: str, fields: Dict[str, Any]) -> None:
    """An event a shard ``forward``ed, emitted here as if it happened here."""
    fields = dict(fields)
    name = fields.pop("event", "")
    if name == "remote_output":
        remote_output(str(fields.get("host")), str(fields.get("line")))
    else:
        _log(level if level in LEVELS else "info", str(name), fields)
