"""Which OpenSSH client configuration applies to a host, decided as ``ssh`` decides it. Controller-side, pure logic.

Files are read in OpenSSH's order: the user's (``~/.ssh/config``), then the system's
(``SYSTEM_CONFIG``, ``/etc/ssh/ssh_config``); or only the one file given, as ``ssh -F`` does.
Each file is parsed once (``ssh_config_file``); a lookup walks the parsed lines:

- ``Host`` patterns (``*``, ``?``, ``!`` negation) match the name as given, case-sensitively;
- ``Match`` criteria ``all``, ``host`` (the HostName so far, else the name given),
  ``originalhost``, ``user`` (the User so far, else the local user), ``localuser``,
  ``canonical`` and ``final``, each negatable with ``!``; host name lists match regardless of
  case, user lists exactly. ``Match final`` asks for a second pass, as in OpenSSH, in which
  ``Host`` and ``Match host`` see the resolved host name and ``canonical``/``final`` match.
  A Match with a criterion chopsticks does not evaluate (``exec``) never applies: the file's
  ``ssh_config_unsupported`` warning names it;
- ``Include`` (globs; relative to ``~/.ssh``, or to the system file's folder from there); an
  Include in a block that does not apply is parsed (its errors count) but never applies;
- the first value obtained for a keyword wins, except ``IdentityFile``, which accumulates
  (without repeats); of ``ProxyJump`` and ``ProxyCommand`` the first wins (``ProxyCommand
  none`` included, ``ProxyJump none`` not: ssh's own rule); a keyword OpenSSH does not know
  is an error unless ``IgnoreUnknown`` (in force at that line) names it.

``expand`` applies OpenSSH's ``%`` tokens (and ``${VAR}``) where each keyword accepts them.
"""

import functools
import getpass
import glob
import hashlib
import os
import pwd
import re
import socket
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from chopsticks.transports import ssh_config_file
from chopsticks.transports.ssh_config_file import MATCH_UNSUPPORTED, UNKNOWN, ConfigError, Criterion, Line

__all__ = ["ConfigError", "Source", "expand", "lookup", "resolved_hostname", "sources"]

SYSTEM_CONFIG = "/etc/ssh/ssh_config"  # a module default, so tests can point it elsewhere
USER_CONFIG = "~/.ssh/config"
MAX_INCLUDE_DEPTH = 16  # OpenSSH's READCONF_MAX_DEPTH


class Source(NamedTuple):
    """A configuration file to read, and the folder a relative ``Include`` in it points to."""

    path: str
    include_dir: str


def sources(ssh_config: Optional[str]) -> List[Source]:
    """The files OpenSSH reads: ``None``: the user's then the system's; a path: only it (``ssh
    -F``); ``''``: none."""
    user_dir = os.path.expanduser("~/.ssh")
    if ssh_config is None:
        system = SYSTEM_CONFIG
        return [Source(os.path.expanduser(USER_CONFIG), user_dir), Source(system, os.path.dirname(system) or ".")]
    return [Source(os.path.expanduser(ssh_config), user_dir)] if ssh_config else []


# -- patterns ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> "re.Pattern[str]":
    """OpenSSH patterns: ``*`` and ``?`` only (brackets are literal, unlike fnmatch)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def _matches(patterns: Sequence[str], name: str) -> bool:
    """Any positive pattern matches and no negated one does."""
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _compiled(pattern[1:] if negated else pattern).fullmatch(name):
            if negated:
                return False
            hit = True
    return hit


def host_line_matches(patterns: Sequence[str], host: str) -> bool:
    """A ``Host`` line: each word one pattern (a comma is literal), matched case-sensitively."""
    return _matches(patterns, host)


def pattern_list_matches(pattern_list: str, name: str, fold_case: bool) -> bool:
    """A comma-separated pattern list (``Match`` arguments, ``IgnoreUnknown``)."""
    if fold_case:
        pattern_list, name = pattern_list.lower(), name.lower()
    return _matches(pattern_list.split(","), name)


def local_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return getpass.getuser()


# -- the walk over the files ------------------------------------------------------------------

class _Walk:
    """One lookup: the options obtained so far, and what Host and Match lines are compared with."""

    def __init__(self, original: str, user: Optional[str]):
        self.original = original
        self.options: Dict[str, Any] = {"user": user} if user else {}
        self.local_user = local_user()
        self.final = False  # the second pass that ``Match final`` asks for
        self.want_final = False
        self.host = original  # what Host lines match: the name given, the resolved name in the final pass

    def read(self, path: str, include_dir: str, never: bool, depth: int) -> None:
        """Apply the lines of ``path`` that concern the host; with ``never``, only check them."""
        if depth > MAX_INCLUDE_DEPTH:
            raise ConfigError("%s: Include nested more than %d deep (does a file include itself?)" % (
                path, MAX_INCLUDE_DEPTH))
        parsed = ssh_config_file.read(path)
        if parsed is None:
            return
        active = not never  # lines before the first Host or Match apply to every host
        for line in parsed.lines:
            keyword = line.keyword
            if keyword == "host":
                active = not never and host_line_matches(line.value, self.host)
            elif keyword == "match":
                active = self.match(line.value) and not never
            elif keyword == "include":
                for pattern in line.value:
                    pattern = os.path.join(include_dir, os.path.expanduser(pattern))
                    for included in sorted(glob.glob(pattern)):
                        self.read(included, include_dir, never or not active, depth + 1)
            elif keyword == UNKNOWN:
                self.unknown(parsed.path, line)
            elif active:
                self.apply(line)

    def unknown(self, path: str, line: Line) -> None:
        ignored = self.options.get("ignoreunknown")
        if ignored is None or not pattern_list_matches(ignored, line.spelled, fold_case=True):
            raise ConfigError("%s line %d: unknown keyword %r: the OpenSSH client has no such option (if it is "
                              "meant for another client, name it in IgnoreUnknown before this line)" % (
                                  path, line.number, line.spelled))

    def apply(self, line: Line) -> None:
        keyword, value, options = line.keyword, line.value, self.options
        if keyword == "identityfile":
            files = options.setdefault("identityfile", [])
            if value not in files:
                files.append(value)
        elif keyword == "proxyjump":  # as OpenSSH: a ProxyCommand first (even ``none``) wins
            if "proxyjump" not in options and "proxycommand" not in options:
                options[keyword] = value
        elif keyword == "proxycommand":  # and a ProxyJump first wins, unless it was ``none``
            if "proxycommand" not in options and str(options.get("proxyjump", "none")).lower() == "none":
                options[keyword] = value
        elif keyword not in options and value is not None:  # ``ConnectTimeout none`` sets nothing
            options[keyword] = value

    def match(self, criteria: Tuple[Criterion, ...]) -> bool:
        """Whether every criterion of a Match line holds (each is looked at, as OpenSSH does)."""
        result = True
        for criterion in criteria:
            if criterion.name in MATCH_UNSUPPORTED:
                result = False  # not evaluated: its block never applies, negated or not
                continue
            if criterion.name == "final":
                self.want_final = True
            found = MATCHERS[criterion.name](self, criterion.argument)
            if found == criterion.negated:
                result = False
        return result

    def match_host(self) -> str:
        if self.final:
            return self.host
        return resolved_hostname(self.options.get("hostname"), self.original)


def _pattern_matcher(subject: Callable[[_Walk], str], fold_case: bool) -> Callable[[_Walk, str], bool]:
    return lambda walk, argument: pattern_list_matches(argument, subject(walk), fold_case)


# Match criterion -> whether it holds, given the walk and the criterion's argument.
MATCHERS: Dict[str, Callable[[_Walk, str], bool]] = {
    "all": lambda walk, argument: True,
    "canonical": lambda walk, argument: walk.final,
    "final": lambda walk, argument: walk.final,
    "host": _pattern_matcher(_Walk.match_host, fold_case=True),
    "originalhost": _pattern_matcher(lambda walk: walk.original, fold_case=True),
    "user": _pattern_matcher(lambda walk: walk.options.get("user") or walk.local_user, fold_case=False),
    "localuser": _pattern_matcher(lambda walk: walk.local_user, fold_case=False),
}


def lookup(host: str, paths: Optional[Sequence[Union[str, Source]]] = None, user: Optional[str] = None
           ) -> Dict[str, Any]:
    """The options that apply to ``host`` (the name as given), keywords lower-cased.

    ``paths``: the files, in order (default: ``sources(None)``, the user's then the system's);
    a bare path is a user file. ``user``: the user given on the command line, which ``Match
    user`` sees and which wins. Values are converted (numbers are ints, flags bools);
    ``identityfile`` is a list, ``userknownhostsfile`` and ``globalknownhostsfile`` tuples,
    ``proxycommand`` the raw command; tokens are not expanded (``expand`` does that)."""
    chosen = sources(None) if paths is None else [
        path if isinstance(path, Source) else Source(os.path.expanduser(path), os.path.expanduser("~/.ssh"))
        for path in paths]
    walk = _Walk(host, user)
    for source in chosen:
        walk.read(source.path, source.include_dir, False, 0)
    if walk.want_final:
        walk.final = True
        walk.host = resolved_hostname(walk.options.get("hostname"), host)
        walk.options["hostname"] = walk.host.replace("%", "%%")  # settled: HostName lines no longer count
        for source in chosen:
            walk.read(source.path, source.include_dir, False, 0)
    return walk.options


# -- tokens -----------------------------------------------------------------------------------

# The % tokens each keyword accepts (``%%`` everywhere), from ssh_config(5)'s TOKENS.
PATH_TOKENS = "CdhiklLnpru"
TOKENS = {"HostName": "h", "ProxyCommand": "hnpr", "IdentityFile": PATH_TOKENS,
          "UserKnownHostsFile": PATH_TOKENS}
ENVIRONMENT = ("IdentityFile", "UserKnownHostsFile")  # keywords that also take ${VAR}
# Tokens that go into a shell command, and what they may not contain there: a host or user
# name from a hosts file must not run commands of its own (OpenSSH refuses them since 9.6).
SHELL_TOKENS = {"ProxyCommand": "hnr"}
SHELL_METACHARACTERS = frozenset("'`\"$\\;&<>|(){}")


class Target(NamedTuple):
    """What the tokens stand for."""

    host: str  # as given (%n, %k)
    hostname: str  # resolved (%h)
    port: int
    user: str


def _token_values(target: Target) -> Dict[str, Callable[[], str]]:
    def local_host() -> str:
        return socket.gethostname()

    def connection_hash() -> str:
        text = "%s%s%d%s" % (local_host(), target.hostname, target.port, target.user)
        return hashlib.sha1(text.encode()).hexdigest()

    return {
        "h": lambda: target.hostname, "n": lambda: target.host, "k": lambda: target.host,
        "p": lambda: str(target.port), "r": lambda: target.user, "u": local_user,
        "d": lambda: os.path.expanduser("~"), "i": lambda: str(os.getuid()),
        "l": local_host, "L": lambda: local_host().split(".")[0], "C": connection_hash,
    }


def expand(value: str, keyword: str, target: Target) -> str:
    """``value`` of ``keyword`` with its tokens (and, for paths, ``${VAR}`` and a leading ``~``)
    expanded; a token the keyword does not accept is a ``ConfigError``, as in OpenSSH."""
    allowed = TOKENS[keyword]
    values = _token_values(target)
    out: List[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "%":
            token = value[i + 1:i + 2]
            if token == "%":
                out.append("%")
            elif token and token in allowed:
                text = values[token]()
                if token in SHELL_TOKENS.get(keyword, "") and not _shell_safe(text):
                    raise ConfigError("%s %r in ssh_config: %%%s would be %r, which a shell would not take as one "
                                      "plain word (a shell metacharacter, a space, or a leading -)" % (
                                          keyword, value, token, text))
                out.append(text)
            else:
                accepted = ", ".join("%" + t for t in "%" + allowed)
                raise ConfigError("%s %r in ssh_config: %s (%s accepts %s)" % (
                    keyword, value, "unknown token %" + token if token else "a lone % at the end", keyword, accepted))
            i += 2
        elif keyword in ENVIRONMENT and value.startswith("${", i):
            end = value.find("}", i)
            name = value[i + 2:end] if end > 0 else ""
            if not name or name not in os.environ:
                why = "environment variable %s is not set" % name if name else "a ${ without its }"
                raise ConfigError("%s %r in ssh_config: %s" % (keyword, value, why))
            out.append(os.environ[name])
            i = end + 1
        else:
            out.append(c)
            i += 1
    text = "".join(out)
    return os.path.expanduser(text) if keyword in ENVIRONMENT else text


def _shell_safe(text: str) -> bool:
    return not text.startswith("-") and not any(
        c in SHELL_METACHARACTERS or c.isspace() or not c.isprintable() for c in text)


def resolved_hostname(configured: Optional[str], host: str) -> str:
    """The host name to connect to, as OpenSSH settles it: ``HostName`` (with ``%h``, the name
    given) or the name given, lower-cased."""
    if not configured:
        return host.lower()
    return expand(configured, "HostName", Target(host, host, 0, "")).lower()
