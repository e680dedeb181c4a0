"""What the fan-out prints: host records, the summary, the table; logs and progress. CLI layer.

On stdout: a record per host, ``{"host", "status", "value"}`` or ``{"host", "status",
"error", "traceback"}``, made fit for strict JSON by ``jsonable`` (``JSON_ENCODING``: one
encoding per type a result may hold); or a table with one row per host in the group's order
(host, status, then a column per fact or one value column; a failed host's row carries its
error; ``run`` prints a block per host with the command's output). Cells are short human
forms (``19.1/23.4G``, ``Debian GNU/Linux 12``); ``--format json`` has the full values. Text
from hosts (values, errors, output, names) shows control characters as escapes
(``logs.visible``) in tables and console logs; cells line up by the columns they take on a
terminal (``fanout.width``: CJK and emoji count two). On stderr: structlog logs, and a tqdm
progress bar on a terminal.
"""

import datetime
import decimal
import json
import logging
import math
import re
import shutil
import sys
import uuid
from typing import Any, Callable, Dict, List, Optional

from chopsticks.errors import CallTimeout, ConnectError
from chopsticks.fanout import width as terminal
from chopsticks.logs import escape_for_terminal, visible
from chopsticks.results import ErrorResult

OK, FAILED, TIMED_OUT, UNREACHABLE = "ok", "failed", "timed out", "unreachable"
# Hosts without a result: the run was interrupted (Ctrl-C), or stopped by --max-fail first.
INTERRUPTED, NOT_STARTED = "interrupted", "not started"
STATUSES = (OK, FAILED, TIMED_OUT, UNREACHABLE, INTERRUPTED, NOT_STARTED)
MAX_CELL = 48


def record(host: str, value: Any, judge: Callable[[Any], str]) -> Dict[str, Any]:
    """What one host's result prints as: host, status, then value or error, fit for JSON.

    ``judge`` raises ValueError for a value it cannot judge (not what the job returns: a
    hostile or broken host); that host counts as failed, and so does a value too deep to show."""
    if isinstance(value, ErrorResult):
        # never reached (no login, no agent) before anything ran, a timeout of its own included
        status = UNREACHABLE if isinstance(value.exception, ConnectError) else \
            TIMED_OUT if isinstance(value.exception, CallTimeout) else FAILED
        entry = {"host": host, "status": status, "error": cli_hints(value.msg)}
        if value.tb:
            entry["traceback"] = value.tb
        return jsonable(entry)
    try:
        return jsonable({"host": host, "status": judge(value), "value": value})
    except ValueError as exc:
        return jsonable({"host": host, "status": FAILED, "error": "unexpected result: %s" % exc})


# A library keyword in an error message, and the option that says it on the command line.
CLI_OPTIONS = {"host_key_policy": "--host-key-policy", "connect_timeout": "--connect-timeout",
               "known_hosts": "--known-hosts"}
_KEYWORD = re.compile(r"\b(%s)=(['\"]?)([\w.-]+)\2" % "|".join(CLI_OPTIONS))


def cli_hints(message: str) -> str:
    """``"use host_key_policy='accept-new'"`` -> ``"use --host-key-policy accept-new"``."""
    return _KEYWORD.sub(lambda m: "%s %s" % (CLI_OPTIONS[m.group(1)], m.group(3)), message)


# -- values as JSON ---------------------------------------------------------------------------
# Whatever a host returns prints as strict JSON (no NaN or Infinity tokens). Python refuses to
# turn an int of more than 4,300 digits into decimal text (it takes quadratic time), so a
# bigger one is written in hexadecimal, which is linear and exact.
MAX_DECIMAL_BITS = 14_000  # about 4,214 digits: any JSON reader in Python reads it back
MAX_DEPTH = 100  # nesting shown; deeper is refused (json and our encoder recurse)
_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _int(n: int, depth: int) -> Any:
    return n if n.bit_length() <= MAX_DECIMAL_BITS else hex(n)


def _float(x: float, depth: int) -> Any:
    return x if math.isfinite(x) else _FLOATS[repr(x)]


def _text(text: str, depth: int) -> str:
    """A str with surrogate escapes (bytes that were not UTF-8) shows those bytes as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _items(items: Any, depth: int) -> List[Any]:
    return [jsonable(item, depth + 1) for item in items]


def _set(items: Any, depth: int) -> List[Any]:
    return sorted(_items(items, depth), key=json.dumps)  # a stable order, not the hash's


def _key(key: Any, depth: int) -> str:
    return key if isinstance(key, str) else json.dumps(jsonable(key, depth + 1))


def _dict(value: Dict[Any, Any], depth: int) -> Dict[str, Any]:
    return {_key(key, depth): jsonable(item, depth + 1) for key, item in value.items()}


JSON_ENCODING: Dict[type, Callable[[Any, int], Any]] = {
    type(None): lambda value, depth: value,
    bool: lambda value, depth: value,
    int: _int,
    float: _float,
    str: _text,
    bytes: lambda value, depth: bytes(value).decode("utf-8", "backslashreplace"),
    bytearray: lambda value, depth: bytes(value).decode("utf-8", "backslashreplace"),
    list: _items,
    tuple: _items,
    set: _set,
    frozenset: _set,
    dict: _dict,
    complex: lambda value, depth: repr(value),  # "(1+2j)", as complex() reads it
    datetime.datetime: lambda value, depth: value.isoformat(),
    datetime.date: lambda value, depth: value.isoformat(),
    datetime.time: lambda value, depth: value.isoformat(),
    datetime.timedelta: lambda value, depth: value.total_seconds(),
    decimal.Decimal: lambda value, depth: str(value),
    uuid.UUID: lambda value, depth: str(value),
}


def jsonable(value: Any, depth: int = 0) -> Any:
    """``value`` as what ``json.dumps(..., allow_nan=False)`` writes (see ``JSON_ENCODING``);
    a type not in the table (never from a host: results arrive in a closed set) as its repr.
    ValueError if it is nested deeper than ``MAX_DEPTH``."""
    if depth > MAX_DEPTH:
        raise ValueError("the value is nested more than %d levels deep" % MAX_DEPTH)
    for kind in type(value).__mro__:
        encode = JSON_ENCODING.get(kind)
        if encode is not None:
            return encode(value, depth)
    return repr(value)


def to_json(document: Any, indent: Optional[int] = None) -> str:
    """Strict JSON of what ``record`` or ``jsonable`` made."""
    return json.dumps(document, allow_nan=False, indent=indent)


def kept(entry: Dict[str, Any], printed: bool) -> Dict[str, Any]:
    """What the fan-out keeps of a record until its end: all of it for a table or a JSON
    document; only host and status (what the summary counts) once the record is ``printed``
    (jsonl), so that memory does not grow with hosts times what they return."""
    return {"host": entry["host"], "status": entry["status"]} if printed else entry


def summarize(counts: Dict[str, int], total: int, seconds: float) -> Dict[str, Any]:
    """The summary of a run from its count of hosts per status."""
    return {"hosts": total, "ok": counts.get(OK, 0), "failed": counts.get(FAILED, 0),
            "timed_out": counts.get(TIMED_OUT, 0), "unreachable": counts.get(UNREACHABLE, 0),
            "unfinished": counts.get(INTERRUPTED, 0), "not_started": counts.get(NOT_STARTED, 0),
            "seconds": round(seconds, 3)}


def summary_line(summary: Dict[str, Any]) -> str:
    text = "%d host%s in %.2fs: %d ok, %d failed, %d timed out" % (
        summary["hosts"], "" if summary["hosts"] == 1 else "s", summary["seconds"], summary["ok"], summary["failed"], summary["timed_out"])
    if summary["unreachable"]:
        text += ", %d unreachable" % summary["unreachable"]
    if summary["unfinished"]:
        text += ", %d unfinished (interrupted)" % summary["unfinished"]
    if summary["not_started"]:
        text += ", %d not started (--max-fail)" % summary["not_started"]
    return text


def _size(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return ("%.1f%s" % (n, unit)) if unit else "%d" % n
        n /= 1024
    return str(n)


def _duration(seconds: float) -> str:
    minutes, hours, days = int(seconds // 60) % 60, int(seconds // 3600) % 24, int(seconds // 86400)
    if days:
        return "%dd%dh" % (days, hours)
    return "%dh%02dm" % (hours, minutes) if hours else "%dm" % minutes


def _memory(m: Dict[str, Any]) -> str:
    return "%s/%s" % (_size(m.get("available", 0)), _size(m.get("total", 0)))


def _os(info: Dict[str, Any]) -> str:
    return info.get("PRETTY_NAME") or " ".join(filter(None, (info.get("NAME"), info.get("VERSION_ID"))))


FACT_CELLS: Dict[str, Callable[[Any], str]] = {
    "os_release": _os,
    "kernel": lambda k: k.get("release", ""),
    "memory": _memory,
    "load": lambda load: " ".join("%.2f" % x for x in load),
    "uptime": _duration,
    "python_version": lambda v: ".".join(str(x) for x in v[:3]),
    "disks": lambda d: " ".join("%s:%s" % (mount, _size(info.get("available", 0))) for mount, info in d.items()),
    "ips": lambda ips: " ".join("%s=%s" % item for item in ips.items()),
}
HEADINGS = {"os_release": "os", "python_version": "python", "memory": "mem avail/total"}


def cell(value: Any, format_value: Optional[Callable[[Any], str]] = None) -> str:
    """A table cell for a value made by ``jsonable``: short human form, control characters escaped."""
    if value is None:
        return "-"
    if format_value is not None:
        try:
            return visible(format_value(value))
        except (AttributeError, TypeError, ValueError, KeyError, ArithmeticError):
            pass  # not the shape this fact has (a hostile or odd host): shown as JSON instead
    if isinstance(value, str):
        return visible(value)
    return visible(json.dumps(value, ensure_ascii=False))


def _fit(line: str, width: Optional[int]) -> str:
    return terminal.clip(line, width) if width else line


def show(records: List[Dict[str, Any]], columns: Optional[List[str]], blocks: bool, out=None) -> None:
    out = out or sys.stdout
    width = shutil.get_terminal_size().columns if out.isatty() else None
    if blocks:
        _show_blocks(records, out, width)
        return
    names = columns or ["value"]
    rows = []
    for r in records:
        if "value" in r:
            value = r["value"]
            cells = ([cell(value.get(name) if isinstance(value, dict) else None, FACT_CELLS.get(name))
                      for name in names] if columns else [cell(value)])
        else:
            cells = None
        rows.append((visible(r["host"]), r["status"], cells, visible(r.get("error", ""))))
    headings = ["host", "status"] + [HEADINGS.get(name, name) for name in names]
    widths = [terminal.columns(h) for h in headings]
    for host, status, cells, _ in rows:
        for i, text in enumerate([host, status] + (cells or [])):
            widths[i] = max(widths[i], min(terminal.columns(text), MAX_CELL))

    def line(parts: List[str]) -> str:
        padded = [terminal.pad(terminal.clip(p, w), w) for p, w in zip(parts[:-1], widths)]
        return _fit("  ".join(padded + [parts[-1]]).rstrip(), width)

    print(line(headings), file=out)
    for host, status, cells, error in rows:
        print(line([host, status] + cells) if cells is not None else line([host, status, error]), file=out)
    print(file=out)


def _show_blocks(records: List[Dict[str, Any]], out, width: Optional[int]) -> None:
    """``run``'s output, a block per host (the value was checked by ``fanout.subcommands._judge_run``)."""
    for r in records:
        value = r.get("value")
        host = visible(r["host"])
        if value is None:
            print(_fit("%s  %s  %s" % (host, r["status"], visible(r.get("error", ""))), width), file=out)
            continue
        print(_fit("%s  %s  %s" % (host, r["status"], run_note(value)), width), file=out)
        for line in run_output(value):
            print(_fit(line, width), file=out)
    print(file=out)


def run_note(value: Dict[str, Any]) -> str:
    """What a ``run`` host's block says after its status: ``exit 0``, ``killed after timeout``."""
    note = "killed after timeout" if value["timed_out"] else "exit %s" % value["exit_code"]
    return note + (", output truncated" if value.get("truncated") else "")


def run_output(value: Dict[str, Any]) -> List[str]:
    """A ``run`` host's output lines, stdout indented, stderr after ``!``, made ``visible``."""
    return [prefix + visible(line) for prefix, stream in (("    ", "stdout"), ("  ! ", "stderr"))
            for line in _lines(value[stream])]


def _lines(text: str) -> List[str]:
    """Lines split at newlines only: a ``\\r`` inside one is shown, not obeyed."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


# -- on stderr: logs and progress -------------------------------------------------------------

def configure_logging(quiet: bool, verbose: bool, log_format: Optional[str]) -> None:
    """structlog on stderr, console or JSON lines; remote output is an info event."""
    import structlog
    import tqdm

    class Writer(structlog.PrintLogger):
        """Log lines above the progress bar, not through it."""

        def msg(self, message: str) -> None:
            try:
                tqdm.tqdm.write(message, file=sys.stderr)
            except (OSError, ValueError):
                pass  # stderr closed or a broken pipe: logging must not fail what logged

        log = debug = info = warning = warn = error = critical = exception = fatal = msg

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    # JSON escapes control characters itself; a console shows them as escapes too
    renderers = ([structlog.processors.JSONRenderer()] if log_format == "json"
                 else [escape_for_terminal, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())])
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), *renderers],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: Writer(sys.stderr),
        cache_logger_on_first_use=True)


def progress_bar(hosts: int, enabled: bool, count_bytes: bool, total_bytes: Optional[int]):
    """Hosts done, or bytes moved for put and fetch (hosts then in the postfix): a text bar on a
    terminal, a widget in a notebook (``tqdm.auto``)."""
    import tqdm.auto
    if count_bytes:
        total = None if total_bytes is None else total_bytes * hosts
        return tqdm.auto.tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                         disable=not enabled, leave=False, dynamic_ncols=True, smoothing=0.1)
    return tqdm.auto.tqdm(total=hosts, unit="host", file=sys.stderr, disable=not enabled, leave=False,
                     dynamic_ncols=True, smoothing=0.1)


def print_line(line: str, bar) -> None:
    """A line on stdout that leaves a progress bar on stderr intact."""
    if bar.disable:
        print(line, flush=True)
    else:
        bar.write(line, file=sys.stdout)
