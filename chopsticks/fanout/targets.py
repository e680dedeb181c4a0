"""Which hosts a run targets: host patterns, ``@NAME`` groups, exclusions, an Ansible inventory. CLI layer.

Host words come from ``-H``, ``-f`` files or stdin (``fanout.hosts``: ranges, files). A word
``@NAME`` is a group, from the groups file or the inventory; ``-x/--exclude`` takes the same
words away. The groups file (``--groups FILE``; default ``$XDG_CONFIG_HOME/chopsticks/groups``,
else ``~/.config/chopsticks/groups``) has one group per line::

    # name: hosts, ranges or other @groups, separated by commas or spaces
    web: web-[001-480]
    db: db-1 db-2
    prod: @web @db

``--inventory FILE`` reads the JSON of ``ansible-inventory --list`` without importing Ansible:
each top-level group's ``hosts`` and ``children`` (``all`` included), and each host's
``ansible_host``, ``ansible_port`` and ``ansible_user`` (``_meta.hostvars``), which say how
that host is reached. Every mistake is a ``UsageError`` of one line.
"""

import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from chopsticks.fanout import hosts
from chopsticks.fanout.options import UsageError

GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")
# How deep groups may name groups (a loop is found before this).
MAX_NESTING = 32
# What an inventory's host variables say, as the SSH options they set.
HOSTVARS: Dict[str, Tuple[str, type]] = {"ansible_host": ("hostname", str), "ansible_port": ("port", int),
                                          "ansible_user": ("user", str)}


def default_groups_file() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "chopsticks", "groups")


def read_groups_file(path: str, required: bool) -> Dict[str, List[str]]:
    """``name -> words`` of a groups file; a missing default file is no groups."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if required:
            raise UsageError("--groups: %r does not exist" % path) from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError("cannot read groups file %r: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
    groups: Dict[str, List[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, colon, members = line.partition(":")
        name = name.strip()
        if not colon or not GROUP_NAME.match(name):
            raise UsageError("groups file %r, line %d: expected 'NAME: HOSTS', got %r" % (path, number, line))
        if name in groups:
            raise UsageError("groups file %r, line %d: group %r is defined twice" % (path, number, name))
        groups[name] = hosts.split(members)
    return groups


class Inventory:
    """An Ansible inventory's groups (``name -> words``) and how its hosts are reached."""

    def __init__(self, path: str):
        try:
            with open(path, encoding="utf-8") as f:
                document = json.load(f)
        except OSError as exc:
            raise UsageError("cannot read inventory %r: %s" % (path, exc.strerror)) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise UsageError("inventory %r is not JSON (the output of ansible-inventory --list): %s"
                             % (path, exc)) from None
        if not isinstance(document, dict):
            raise UsageError("inventory %r: expected a JSON object of groups" % path)
        self.groups: Dict[str, List[str]] = {}
        for name, group in document.items():
            if name == "_meta":
                continue
            if not isinstance(group, dict) or not GROUP_NAME.match(name):
                raise UsageError("inventory %r: group %r is not an object of hosts and children" % (path, name))
            members = _strings(path, name, group, "hosts") + ["@" + child for child in _strings(path, name, group,
                                                                                              "children")]
            self.groups[name] = members
        meta = document.get("_meta", {})
        hostvars = meta.get("hostvars", {}) if isinstance(meta, dict) else None
        if not isinstance(hostvars, dict):
            raise UsageError("inventory %r: _meta.hostvars is not an object" % path)
        self.reach: Dict[str, Dict[str, Any]] = {}
        for host, variables in hostvars.items():
            if not isinstance(variables, dict):
                raise UsageError("inventory %r: the variables of %r are not an object" % (path, host))
            self.reach[host] = _reach(path, host, variables)

    def all_hosts(self) -> List[str]:
        """Every host the inventory names, in its order."""
        seen: Dict[str, None] = {}
        for words in self.groups.values():
            for word in words:
                if not word.startswith("@"):
                    seen.setdefault(word, None)
        for host in self.reach:
            seen.setdefault(host, None)
        return list(seen)


def _strings(path: str, group: str, body: Dict[str, Any], key: str) -> List[str]:
    values = body.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise UsageError("inventory %r: %s.%s is not a list of names" % (path, group, key))
    return values


def _reach(path: str, host: str, variables: Dict[str, Any]) -> Dict[str, Any]:
    """The SSH options an inventory host's variables set (the rest are not ours to read)."""
    reach = {}
    for variable, (option, kind) in HOSTVARS.items():
        if variable not in variables:
            continue
        value: Any = variables[variable]
        if kind is int and isinstance(value, str) and value.isdigit():
            value = int(value)
        if kind is int:
            ok = type(value) is int and 0 < value < 65536
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            raise UsageError("inventory %r: %s of %r cannot be %r" % (path, variable, host, variables[variable]))
        reach[option] = value
    return reach


class Targets:
    """The hosts of a run, in order, and how each inventory host is reached."""

    def __init__(self, args):
        self.inventory = Inventory(args.inventory) if args.inventory else None
        explicit = args.groups is not None
        self.groups = read_groups_file(args.groups if explicit else default_groups_file(), explicit)
        if self.inventory is not None:
            self.groups.update(self.inventory.groups)
        self.names = self._read(args)

    def reach(self, host: str) -> Dict[str, Any]:
        """The SSH options the inventory sets for ``host`` (``hostname``, ``port``, ``user``)."""
        return {} if self.inventory is None else self.inventory.reach.get(host, {})

    def _read(self, args) -> List[str]:
        words = [word for spec in args.hosts or [] for word in hosts.split(spec)]
        files = list(args.hosts_file or [])
        if not words and not files:
            if self.inventory is not None:
                words = self.inventory.all_hosts()
            elif sys.stdin is None or sys.stdin.isatty():
                raise UsageError("no hosts: give -H HOSTS, -f FILE, --inventory FILE, or a list on stdin")
            else:
                files = ["-"]
        try:
            for path in files:
                words.extend(hosts.split(hosts.read_file(path)))
            names = hosts.collect(self._expand(words), [])
            excluded = set(hosts.collect(self._expand([word for spec in args.exclude or []
                                                       for word in hosts.split(spec)]), []))
        except hosts.HostSpecError as exc:
            raise UsageError(str(exc)) from None
        names = [name for name in names if name not in excluded]
        if not names:
            raise UsageError("the host list is empty" + (" once the excluded hosts are left out" if excluded else ""))
        return names

    def _expand(self, words: List[str], chain: Tuple[str, ...] = ()) -> List[str]:
        """``words`` with each ``@NAME`` replaced by its group's words, recursively."""
        out: List[str] = []
        for word in words:
            if not word.startswith("@"):
                out.append(word)
                continue
            name = word[1:]
            if name in chain:
                raise UsageError("group @%s includes itself (%s)" % (name, " -> ".join("@" + n for n in chain + (name,))))
            if name not in self.groups:
                known = ", ".join(sorted(self.groups)[:20]) or "none"
                raise UsageError("unknown group @%s (groups: %s)" % (name, known))
            if len(chain) >= MAX_NESTING:
                raise UsageError("groups nest more than %d deep at @%s" % (MAX_NESTING, name))
            out.extend(self._expand(self.groups[name], chain + (name,)))
        return out


def explain(host: str, options: Any, reach: Optional[Dict[str, Any]] = None) -> str:
    """What would be used to reach ``host``, one ``key value`` per line (as ``ssh -G``)."""
    import dataclasses
    from chopsticks.transports.ssh_options import resolve
    if reach:
        options = dataclasses.replace(options, **reach)
    try:
        destination = resolve(host, options)
    except ValueError as exc:
        raise UsageError("--explain: %s" % exc) from None
    lines = [("host", destination.name), ("hostname", destination.hostname), ("port", destination.port),
             ("user", destination.user)]
    lines += [("identityfile", key) for key in destination.keys]
    lines += [("agent", "yes" if destination.agent else "no"),
              ("knownhostsfile", " ".join(destination.known_hosts)),
              ("hostkeypolicy", destination.host_key_policy),
              ("connecttimeout", destination.connect_timeout),
              ("serveraliveinterval", destination.keepalive_interval),
              ("serveralivecountmax", destination.keepalive_count_max)]
    lines += [("jump", "%s@%s:%d" % (hop.user, hop.hostname, hop.port)) for hop in destination.jumps]
    return "\n".join("%s %s" % (key, value) for key, value in lines)
