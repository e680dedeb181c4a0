"""What the fan-out prints: host records, the summary, the table; logs and progress. CLI layer.

On stdout: a record per host, ``{"host", "status", "value"}`` or ``{"host", "status",
"error", "traceback"}``, made fit for JSON by ``jsonable``; or a table with one row per host
in the group's order (host, status, then a column per fact or one value column; a failed
host's row carries its error; ``run`` prints a block per host with the command's output).
Cells are short human forms (``19.1/23.4G``, ``Debian GNU/Linux 12``); ``--format json``
has the full values. On stderr: structlog logs, and a tqdm progress bar on a terminal.
"""

import json
import logging
import shutil
import sys
from typing import Any, Callable, Dict, List, Optional

from chopsticks.errors import CallTimeout, ConnectTimeout
from chopsticks.results import ErrorResult

OK, FAILED, TIMED_OUT = "ok", "failed", "timed out"
MAX_CELL = 48


def record(host: str, value: Any, judge: Callable[[Any], str]) -> Dict[str, Any]:
    """What one host's result prints as: host, status, then value or error."""
    if isinstance(value, ErrorResult):
        timed_out = isinstance(value.exception, (CallTimeout, ConnectTimeout))
        entry = {"host": host, "status": TIMED_OUT if timed_out else FAILED, "error": value.msg}
        if value.tb:
            entry["traceback"] = value.tb
        return entry
    return {"host": host, "status": judge(value), "value": value}


def jsonable(value: Any) -> Any:
    """A result made fit for JSON: bytes and undecodable text escaped, keys made strings."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return repr(value)


def summarize(records: List[Dict[str, Any]], total: int, seconds: float) -> Dict[str, Any]:
    counts = {status: sum(1 for r in records if r["status"] == status) for status in (OK, FAILED, TIMED_OUT)}
    return {"hosts": total, "ok": counts[OK], "failed": counts[FAILED], "timed_out": counts[TIMED_OUT],
            "unfinished": total - len(records), "seconds": round(seconds, 3)}


def summary_line(summary: Dict[str, Any]) -> str:
    text = "%d host%s in %.2fs: %d ok, %d failed, %d timed out" % (
        summary["hosts"], "" if summary["hosts"] == 1 else "s", summary["seconds"], summary["ok"], summary["failed"], summary["timed_out"])
    if summary["unfinished"]:
        text += ", %d unfinished (interrupted)" % summary["unfinished"]
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
    if value is None:
        return "-"
    if format_value is not None:
        try:
            return format_value(value)
        except (AttributeError, TypeError, ValueError, KeyError):
            pass
    if isinstance(value, str):
        return value
    return json.dumps(value, default=repr, ensure_ascii=False)


def _fit(line: str, width: Optional[int]) -> str:
    line = line.replace("\n", " ")
    if width and len(line) > width:
        return line[:width - 1] + "…"
    return line


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
        rows.append((r["host"], r["status"], cells, r.get("error", "")))
    headings = ["host", "status"] + [HEADINGS.get(name, name) for name in names]
    widths = [len(h) for h in headings]
    for host, status, cells, _ in rows:
        for i, text in enumerate([host, status] + (cells or [])):
            widths[i] = max(widths[i], min(len(text), MAX_CELL))

    def line(parts: List[str]) -> str:
        padded = [p[:w - 1] + "…" if len(p) > w else p.ljust(w) for p, w in zip(parts[:-1], widths)]
        return _fit("  ".join(padded + [parts[-1]]).rstrip(), width)

    print(line(headings), file=out)
    for host, status, cells, error in rows:
        print(line([host, status] + cells) if cells is not None else line([host, status, error]), file=out)
    print(file=out)


def _show_blocks(records: List[Dict[str, Any]], out, width: Optional[int]) -> None:
    for r in records:
        value = r.get("value")
        if value is None:
            print(_fit("%s  %s  %s" % (r["host"], r["status"], r.get("error", "")), width), file=out)
            continue
        note = "killed after timeout" if value.get("timed_out") else "exit %s" % value.get("exit_code")
        print(_fit("%s  %s  %s" % (r["host"], r["status"], note), width), file=out)
        for line in value.get("stdout", "").splitlines():
            print(_fit("    " + line, width), file=out)
        for line in value.get("stderr", "").splitlines():
            print(_fit("  ! " + line, width), file=out)
    print(file=out)


# -- on stderr: logs and progress -------------------------------------------------------------

def configure_logging(quiet: bool, verbose: bool, log_format: Optional[str]) -> None:
    """structlog on stderr, console or JSON lines; remote output is an info event."""
    import structlog
    import tqdm

    class Writer(structlog.PrintLogger):
        """Log lines above the progress bar, not through it."""

        def msg(self, message: str) -> None:
            tqdm.tqdm.write(message, file=sys.stderr)

        log = debug = info = warning = warn = error = critical = exception = fatal = msg

    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    renderer = (structlog.processors.JSONRenderer() if log_format == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: Writer(sys.stderr),
        cache_logger_on_first_use=True)


def progress_bar(hosts: int, enabled: bool, count_bytes: bool, total_bytes: Optional[int]):
    """Hosts done, or bytes moved for put and fetch (hosts then in the postfix)."""
    import tqdm
    if count_bytes:
        total = None if total_bytes is None else total_bytes * hosts
        return tqdm.tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                         disable=not enabled, leave=False, dynamic_ncols=True, smoothing=0.1)
    return tqdm.tqdm(total=hosts, unit="host", file=sys.stderr, disable=not enabled, leave=False,
                     dynamic_ncols=True, smoothing=0.1)


def print_line(line: str, bar) -> None:
    """A line on stdout that leaves a progress bar on stderr intact."""
    if bar.disable:
        print(line, flush=True)
    else:
        bar.write(line, file=sys.stdout)
