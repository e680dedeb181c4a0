"""The common part of OpenSSH's client configuration (``~/.ssh/config``). Controller-side, pure logic.

Honoured keywords: ``Host`` (patterns, ``!`` negation), ``Include``, ``HostName``, ``User``,
``Port``, ``IdentityFile``, ``ProxyJump``, ``UserKnownHostsFile``, ``StrictHostKeyChecking``,
``ConnectTimeout``, ``ServerAliveInterval``, ``ServerAliveCountMax``. As in OpenSSH the first
value obtained for a keyword wins, except ``IdentityFile``, which accumulates; a number that
is not one is an error naming the file and line, in any block. ``Match`` blocks are not
evaluated: their options are skipped. Other keywords are ignored.
"""

import glob
import os
import pwd
import shlex
from typing import Any, Callable, Dict, List, Optional, Tuple

from chopsticks.transports.known_hosts import matches

KNOWN = {"hostname", "user", "port", "identityfile", "proxyjump", "userknownhostsfile",
         "stricthostkeychecking", "connecttimeout", "serveraliveinterval", "serveralivecountmax"}
MULTI = {"identityfile"}
MAX_INCLUDE_DEPTH = 8


class ConfigError(ValueError):
    """The configuration file cannot be read as OpenSSH client configuration."""


def _split(line: str) -> List[str]:
    line = line.strip()
    if not line or line.startswith("#"):
        return []
    try:
        if "=" in line.split(None, 1)[0]:
            key, _, rest = line.partition("=")
            return [key.strip()] + shlex.split(rest, comments=True)
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError("cannot parse %r: %s" % (line, exc)) from None


def _number(kind: type, low: float, high: float) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value
    return convert


# Keywords whose value is a number, checked in every block as OpenSSH does ("Bad port").
NUMBERS: Dict[str, Tuple[Callable[[str], Any], str]] = {
    "port": (_number(int, 1, 65535), "a port number from 1 to 65535"),
    "connecttimeout": (_number(int, 1, 1 << 31), "a positive number of seconds"),
    "serveraliveinterval": (_number(int, 0, 1 << 31), "a number of seconds (0: off)"),
    "serveralivecountmax": (_number(int, 1, 1 << 31), "a positive count"),
}


def _read(path: str, host: str, options: Dict[str, Any], depth: int = 0) -> None:
    """Apply the lines of ``path`` that concern ``host`` to ``options``, Includes too.

    Like OpenSSH, an included file starts active and cannot change the including file's
    state, and an Include in a block that does not apply is not read."""
    if depth > MAX_INCLUDE_DEPTH:
        raise ConfigError("Include nested too deeply at %s" % path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc)) from None
    active = True  # options before the first Host line apply to every host
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = _split(line)
        except ConfigError as exc:
            raise ConfigError("%s line %d: %s" % (path, number, exc)) from None
        if not words:
            continue
        keyword, args = words[0].lower(), words[1:]
        if keyword in NUMBERS and args:
            convert, meaning = NUMBERS[keyword]
            try:
                args = [convert(args[0])]
            except ValueError:
                raise ConfigError("%s line %d: bad %s %r: it must be %s" % (
                    path, number, words[0], args[0], meaning)) from None
        if keyword in ("host", "match"):
            active = keyword == "host" and matches(args, host)  # Match blocks are not evaluated
        elif keyword == "include" and active:
            for pattern in args:
                pattern = os.path.expanduser(pattern)
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                for included in sorted(glob.glob(pattern)):
                    _read(included, host, options, depth + 1)
        elif active and keyword in KNOWN and args:
            if keyword in MULTI:
                options.setdefault(keyword, []).extend(args)
            elif keyword not in options:
                options[keyword] = args if keyword == "userknownhostsfile" else args[0]


def lookup(host: str, paths: Optional[List[str]] = None) -> Dict[str, Any]:
    """The options that apply to ``host``, keywords lower-cased; IdentityFile is a list, numbers are ints."""
    if paths is None:
        paths = [os.path.expanduser("~/.ssh/config")]
    options: Dict[str, Any] = {}
    for path in paths:
        _read(os.path.expanduser(path), host, options)
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
