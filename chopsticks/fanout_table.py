"""The fan-out's table: results for a person at a terminal. CLI layer.

One row per host in the group's order: host, status, then a column per fact (or one value
column); a failed host's row carries its error instead. ``run`` prints a block per host with
the command's output. Cells are short human forms (``19.1/23.4G``, ``Debian GNU/Linux 12``);
``--format json`` has the full values.
"""

import json
import shutil
import sys
from typing import Any, Callable, Dict, List, Optional

MAX_CELL = 48


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
