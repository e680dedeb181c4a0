"""The common part of OpenSSH's client configuration (``~/.ssh/config``). Controller-side, pure logic.

Honoured keywords: ``Host`` (patterns, ``!`` negation), ``Include``, ``HostName``, ``User``,
``Port``, ``IdentityFile``, ``ProxyJump``, ``UserKnownHostsFile``, ``StrictHostKeyChecking``,
``ConnectTimeout``. As in OpenSSH the first value obtained for a keyword wins, except
``IdentityFile``, which accumulates. ``Match`` blocks are not evaluated: their options are
skipped. Other keywords are ignored.
"""

import glob
import os
import pwd
import shlex
from typing import Any, Dict, List, Optional

from chopsticks.known_hosts import matches

KNOWN = {"hostname", "user", "port", "identityfile", "proxyjump", "userknownhostsfile",
         "stricthostkeychecking", "connecttimeout"}
MULTI = {"identityfile"}
MAX_INCLUDE_DEPTH = 8


class ConfigError(ValueError):
    """The configuration file cannot be read as OpenSSH client configuration."""


def _split(line: str) -> List[str]:
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    if "=" in line.split(None, 1)[0]:
        key, _, rest = line.partition("=")
        return [key.strip()] + shlex.split(rest, comments=True)
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError("cannot parse %r: %s" % (line, exc)) from None


def _lines(path: str, depth: int = 0):
    """(keyword, args) pairs of a file with its Includes expanded in place."""
    if depth > MAX_INCLUDE_DEPTH:
        raise ConfigError("Include nested too deeply at %s" % path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc)) from None
    for number, line in enumerate(text.splitlines(), 1):
        words = _split(line)
        if not words:
            continue
        keyword, args = words[0].lower(), words[1:]
        if keyword == "include":
            for pattern in args:
                pattern = os.path.expanduser(pattern)
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                for included in sorted(glob.glob(pattern)):
                    yield from _lines(included, depth + 1)
            continue
        yield keyword, args


def lookup(host: str, paths: Optional[List[str]] = None) -> Dict[str, Any]:
    """The options that apply to ``host``, keywords lower-cased; IdentityFile is a list."""
    if paths is None:
        paths = [os.path.expanduser("~/.ssh/config")]
    options: Dict[str, Any] = {}
    for path in paths:
        active = True  # options before the first Host line apply to every host
        for keyword, args in _lines(os.path.expanduser(path)):
            if keyword == "host":
                active = matches(args, host)
                continue
            if keyword == "match":
                active = False
                continue
            if not active or keyword not in KNOWN or not args:
                continue
            if keyword in MULTI:
                options.setdefault(keyword, [])
                options[keyword].extend(args)
            elif keyword not in options:
                options[keyword] = args if keyword == "userknownhostsfile" else args[0]
    return options


def expand_tokens(value: str, host: str, hostname: str, port: int, user: str) -> str:
    """OpenSSH's % tokens in IdentityFile and UserKnownHostsFile, and ``~``."""
    local_user = pwd.getpwuid(os.getuid()).pw_name
    tokens = {"%%": "%", "%h": hostname, "%n": host, "%p": str(port), "%r": user,
              "%u": local_user, "%d": os.path.expanduser("~")}
    out = []
    i = 0
    while i < len(value):
        pair = value[i:i + 2]
        if pair in tokens:
            out.append(tokens[pair])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return os.path.expanduser("".join(out))
