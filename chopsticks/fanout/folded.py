"""Folded output: hosts with the same result shown once, under a folded host range. CLI layer.

``--fold`` (and ``run``'s default on a terminal when folding at least halves its blocks):

- ``run``: hosts with the same output and status print one block, headed by their range
  (``web-[001-480,482] (481 hosts)  ok  exit 0``), as ``clush -b`` and ``dshbak -c`` do;
- ``facts``, ``call``, ``put``, ``fetch``: a census, for each column (each fact; for ``call``
  the value), of the values the hosts returned, most common first, each with the hosts that
  returned it (``Debian GNU/Linux 12  480  web-[001-480]``); at most ``MAX_VALUES`` a column,
  the rest summed up in one line;
- failed and timed-out hosts fold by their error in both.

A terminal's census counts values as it shows them (``22.1G/23.5G``, as in the table); with
``--format json`` the document gets ``folded`` (the groups of hosts with the same result) and,
for subcommands with columns, ``census``, both with values compared whole. ``jsonl`` prints
each host as it finishes, so it cannot fold. Host names and values are made ``logs.visible``
as in the table.
"""

import hashlib
import json
import shutil
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from chopsticks.fanout import hosts
from chopsticks.fanout import width as terminal
from chopsticks.fanout.options import UsageError
from chopsticks.fanout.output import FACT_CELLS, MAX_CELL, cell, run_note, run_output
from chopsticks.logs import visible

MAX_VALUES = 10  # values a column shows in a census on a terminal; the JSON census has them all


def check(fold: Optional[bool], fmt: Optional[str]) -> None:
    """A UsageError for a fold that cannot be: ``--fold`` with ``--format jsonl``."""
    if fold and fmt == "jsonl":
        raise UsageError("--fold is for --format table or json (jsonl prints each host as it finishes)")


def hosts_text(names: List[str]) -> str:
    """``['web-1', 'web-2', 'db']`` -> ``'web-[1-2],db'``."""
    return ",".join(hosts.fold(names))


def _digest(document: Any) -> bytes:
    """What two results are compared by: a digest of their JSON (values are ``jsonable``'s)."""
    return hashlib.blake2b(json.dumps(document, sort_keys=True).encode(), digest_size=16).digest()


def groups(records: List[Dict[str, Any]]) -> List[Tuple[List[str], Dict[str, Any]]]:
    """The hosts with the same status and value (or error), each group with its first record,
    in the order of their first host."""
    found: Dict[bytes, Tuple[List[str], Dict[str, Any]]] = {}
    for r in records:
        key = _digest([r["status"], r.get("value"), r.get("error")])
        found.setdefault(key, ([], r))[0].append(r["host"])
    return list(found.values())


def wanted(fold: Optional[bool], command: str, records: List[Dict[str, Any]], tty: bool) -> bool:
    """Fold as ``--fold``/``--no-fold`` say; without either, ``run`` on a terminal when that at
    least halves the blocks it prints."""
    if fold is not None:
        return fold
    return command == "run" and tty and len(records) > 1 and 2 * len(groups(records)) <= len(records)


def census(records: List[Dict[str, Any]], column: Optional[str],
           shown: Optional[Callable[[Any], str]] = None) -> List[Tuple[Any, List[str]]]:
    """The values of ``column`` (None: the whole value) among the hosts that returned one, each
    with its hosts; most hosts first, then in the order first seen. With ``shown``, the texts
    it makes of the values instead, so that values shown the same count as one."""
    found: Dict[bytes, Tuple[Any, List[str]]] = {}
    for r in records:
        if "value" not in r:
            continue
        value = r["value"]
        if column is not None:
            value = value.get(column) if isinstance(value, dict) else None
        if shown is not None:
            value = shown(value)
        found.setdefault(_digest(value), (value, []))[1].append(r["host"])
    return sorted(found.values(), key=lambda item: -len(item[1]))  # stable: ties keep their order


def as_json(records: List[Dict[str, Any]], columns: Optional[List[str]]) -> Dict[str, Any]:
    """What ``--fold`` adds to the ``--format json`` document."""
    document: Dict[str, Any] = {"folded": [
        dict({"hosts": hosts_text(names), "count": len(names)},
             **{key: first[key] for key in ("status", "value", "error") if key in first})
        for names, first in groups(records)]}
    if columns:
        document["census"] = {column: [{"value": value, "count": len(names), "hosts": hosts_text(names)}
                                       for value, names in census(records, column)] for column in columns}
    return document


# -- on a terminal ------------------------------------------------------------------------------

def _heading(names: List[str]) -> str:
    text = visible(hosts_text(names))
    return text if len(names) == 1 else "%s (%d hosts)" % (text, len(names))


def show(records: List[Dict[str, Any]], columns: Optional[List[str]], blocks: bool, out=None) -> None:
    """Print ``records`` folded: ``run``'s blocks, or a census of each column, then the
    failed hosts by their error. Output lines are clipped to a terminal's width as in the
    table; host ranges and errors never are: they wrap."""
    out = out or sys.stdout
    width = shutil.get_terminal_size().columns if out.isatty() else None
    if blocks:
        for names, first in groups(records):
            if "value" in first:
                print("%s  %s  %s" % (_heading(names), first["status"], run_note(first["value"])), file=out)
                for line in run_output(first["value"]):
                    print(terminal.clip(line, width) if width else line, file=out)
    else:
        shown: List[Optional[str]] = list(columns) if columns else [None]  # None: call's whole value
        for column in shown:
            _show_census(records, column, out)
    for names, first in groups([r for r in records if "value" not in r]):
        print("%s  %s" % (_heading(names), first["status"]), file=out)
        if first.get("error"):  # hosts interrupted or not started have none
            print("    " + visible(first["error"]), file=out)
    print(file=out)


def _show_census(records: List[Dict[str, Any]], column: Optional[str], out) -> None:
    values = census(records, column, lambda value: cell(value, FACT_CELLS.get(column or "")))
    if not values:
        return
    rows = [(terminal.clip(text, MAX_CELL), names) for text, names in values[:MAX_VALUES]]
    rest = [name for _, names in values[MAX_VALUES:] for name in names]
    if rest:
        rows.append(("(%d other values)" % (len(values) - MAX_VALUES), rest))
    text_width = max(terminal.columns(text) for text, _ in rows)
    count_width = max(len(str(len(names))) for _, names in rows)
    print("%s (%d value%s)" % (column or "value", len(values), "" if len(values) == 1 else "s"), file=out)
    for text, names in rows:
        print("  %s  %*d  %s" % (terminal.pad(text, text_width), count_width, len(names),
                                 visible(hosts_text(names))), file=out)
