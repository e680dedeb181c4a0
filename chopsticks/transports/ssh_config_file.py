"""One OpenSSH client configuration file, parsed once: its lines as values. Controller-side, pure logic.

``read(path)`` parses a file into ``Line``s (keyword, converted value) and caches the result
by path, size and mtime, so a thousand hosts looked up against one ``~/.ssh/config`` cost one
parse. Which lines apply to a host is decided later, by ``ssh_config.lookup``.

Values are checked here, in every block, as OpenSSH does ("Bad port", "extra arguments at end
of line", a malformed ``Match``), so a bad file is one ``ConfigError`` naming the file and line
whichever host is asked for. Keywords are sorted into four kinds (``KEYWORDS``): the ones
chopsticks honours; the ones OpenSSH knows that chopsticks does not (dropped here and named
in one ``ssh_config_unsupported`` warning per file; a debug event for the system's own files
under ``/etc/ssh``); the ones OpenSSH itself ignores
(deprecated) or that only concern its interactive client; and the rest, which OpenSSH refuses
("Bad configuration option") unless ``IgnoreUnknown`` names them: such a line is kept, and
the lookup raises unless the ``IgnoreUnknown`` in force when it reaches it covers it.
"""

import functools
import os
import socket
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from chopsticks import logs

# The keyword a line starts with that is not one OpenSSH knows (kept for the lookup to judge).
UNKNOWN = ""
# Match criteria. OpenSSH 9.2 has these; the "unsupported" ones are not evaluated here (a
# block they guard is not applied, and the warning says so); newer OpenSSH criteria too.
MATCH_CRITERIA = ("all", "canonical", "final", "host", "originalhost", "user", "localuser")
MATCH_UNSUPPORTED = ("exec", "localnetwork", "tagged", "command", "sessiontype", "version")


class ConfigError(ValueError):
    """The configuration file cannot be read as OpenSSH client configuration."""


class Criterion(NamedTuple):
    """One condition of a ``Match`` line: ``host``, ``!user`` ..., with its pattern list."""

    name: str
    negated: bool
    argument: str  # "" for all, canonical, final


class Line(NamedTuple):
    number: int
    keyword: str  # lower case, aliases resolved; UNKNOWN for a keyword OpenSSH does not know
    spelled: str  # as written, for messages
    value: Any  # converted: a str, int, bool, tuple of words, or tuple of Criterion for Match


class Parsed(NamedTuple):
    path: str
    lines: Tuple[Line, ...]
    unsupported: Tuple[str, ...]  # OpenSSH keywords (and Match criteria) not honoured, as spelled


# -- words: OpenSSH's quoting ---------------------------------------------------------------

def words(text: str) -> List[str]:
    """Split an argument string as OpenSSH does: whitespace between words, ``"`` and ``'``
    quote (also mid-word: ``a"b c"`` is one word), a backslash escapes a quote, a backslash or
    a space, and ``#`` at the start of a word ends the line."""
    out: List[str] = []
    word: List[str] = []
    in_word = False
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and (text[i + 1] in "\"'\\" or (not quote and text[i + 1] == " ")):
            word.append(text[i + 1])
            in_word = True
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
            else:
                word.append(c)
        elif c in "\"'":
            quote, in_word = c, True
        elif c in " \t\r\f\v":
            if in_word:
                out.append("".join(word))
                word, in_word = [], False
        elif c == "#" and not in_word:
            break
        else:
            word.append(c)
            in_word = True
        i += 1
    if quote:
        raise ValueError("a quote is not closed")
    if in_word:
        out.append("".join(word))
    return out


def split_line(line: str) -> Optional[Tuple[str, str]]:
    """(keyword, the rest of the line) with ``Keyword value``, ``Keyword=value`` or
    ``Keyword = value``; None for a blank line or a comment."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    end = 0
    while end < len(line) and line[end] not in " \t=":
        end += 1
    keyword, rest = line[:end], line[end:].lstrip(" \t")
    if rest.startswith("="):
        rest = rest[1:].lstrip(" \t")
    return keyword, rest


# -- values ---------------------------------------------------------------------------------

def _one(args: List[str], rest: str) -> str:
    if len(args) > 1:
        raise ValueError("extra arguments at end of line")
    return args[0]


def _first(args: List[str], rest: str) -> str:
    return args[0]  # OpenSSH takes the first word and ignores the others


def _all(args: List[str], rest: str) -> Tuple[str, ...]:
    return tuple(args)


def _raw(args: List[str], rest: str) -> str:
    return rest  # the command extends to the end of the line, quotes and all


def _flag(args: List[str], rest: str) -> bool:
    value = _one(args, rest).lower()
    if value not in ("yes", "true", "no", "false"):
        raise ValueError("it must be yes or no")
    return value in ("yes", "true")


def _choice(*allowed: str) -> Callable[[List[str], str], str]:
    def convert(args: List[str], rest: str) -> str:
        value = _one(args, rest).lower()
        if value not in allowed:
            raise ValueError("it must be one of %s" % ", ".join(allowed))
        return value
    return convert


def _port(args: List[str], rest: str) -> int:
    text = _one(args, rest)
    if text.isdigit():
        if 0 < int(text) < 65536:
            return int(text)
    else:
        try:
            return socket.getservbyname(text, "tcp")
        except OSError:
            pass
    raise ValueError("it must be a port number from 1 to 65535")


def _count(args: List[str], rest: str) -> int:
    text = _one(args, rest)
    if not text.isdigit() or int(text) < 1:
        raise ValueError("it must be a positive count")
    return int(text)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(args: List[str], rest: str) -> Optional[int]:
    """OpenSSH's time format: ``90``, ``1m30s``, ``2h``; ``none``: not set."""
    text = _one(args, rest).lower()
    if text == "none":
        return None
    total, number = 0, ""
    for c in text:
        if c.isdigit():
            number += c
        elif number and c in _UNITS:
            total, number = total + int(number) * _UNITS[c], ""
        else:
            raise ValueError("it must be a time: seconds, or like 1m30s")
    return total + int(number or 0)


# keyword -> its value's converter (a ValueError says what the value must be), for the keywords
# chopsticks honours.
HONOURED: Dict[str, Callable[[List[str], str], Any]] = {
    "hostname": _one, "user": _one, "port": _port, "identityfile": _one, "identitiesonly": _flag,
    "proxyjump": _first, "proxycommand": _raw, "userknownhostsfile": _all, "globalknownhostsfile": _all,
    "stricthostkeychecking": _choice("yes", "ask", "accept-new", "no", "off", "true", "false"),
    "connecttimeout": _seconds, "serveraliveinterval": _seconds, "serveralivecountmax": _count,
    "hashknownhosts": _flag, "ignoreunknown": _first,
}
ALIASES = {"identityfile2": "identityfile", "protocolkeepalives": "serveraliveinterval"}
# Keywords OpenSSH ignores itself (deprecated), and ones about its interactive client that
# chopsticks has no counterpart of (it never prompts, has no escape character or terminal).
IGNORED = frozenset("""
    afstokenpassing cipher compressionlevel fallbacktorsh globalknownhostsfile2 kerberosauthentication
    kerberostgtpassing protocol rhostsauthentication rhostsrsaauthentication rsaauthentication setuptimeout
    useblacklistedkeys useprivilegedport useroaming usersh userknownhostsfile2
    batchmode enableescapecommandline escapechar loglevel logverbose obscurekeystroketiming syslogfacility
    visualhostkey""".split())
# Every other OpenSSH client keyword (9.2, Debian's GSSAPI ones, and later ones): known, not honoured.
UNSUPPORTED = frozenset("""
    addkeystoagent addressfamily bindaddress bindinterface canonicaldomains canonicalizefallbacklocal
    canonicalizehostname canonicalizemaxdots canonicalizepermittedcnames casignaturealgorithms
    certificatefile challengeresponseauthentication channeltimeout checkhostip ciphers clearallforwardings
    compression connectionattempts controlmaster controlpath controlpersist dsaauthentication dynamicforward
    enablesshkeysign exitonforwardfailure fingerprinthash forkafterauthentication forwardagent forwardx11
    forwardx11timeout forwardx11trusted gatewayports gssapiauthentication gssapiclientidentity
    gssapidelegatecredentials gssapikexalgorithms gssapikeyexchange gssapirenewalforcesrekey
    gssapiserveridentity gssapitrustdns hostbasedacceptedalgorithms hostbasedauthentication
    hostbasedkeytypes hostkeyalgorithms hostkeyalias identityagent ipqos kbdinteractiveauthentication
    kbdinteractivedevices keepalive kexalgorithms knownhostscommand localcommand localforward macs
    nohostauthenticationforlocalhost numberofpasswordprompts passwordauthentication permitlocalcommand
    permitremoteopen pkcs11provider preferredauthentications proxyusefdpass pubkeyacceptedalgorithms
    pubkeyacceptedkeytypes pubkeyauthentication refuseconnection rekeylimit remotecommand remoteforward
    requesttty requiredrsasize revokedhostkeys securitykeyprovider sendenv sessiontype setenv
    skeyauthentication smartcarddevice stdinnull streamlocalbindmask streamlocalbindunlink tag
    tcpkeepalive tisauthentication tunnel tunneldevice updatehostkeys verifyhostkeydns versionaddendum
    warnweakcrypto xauthlocation""".split())


def _match(args: List[str], rest: str) -> Tuple[Criterion, ...]:
    """A Match line's criteria, checked as OpenSSH checks them."""
    pieces: List[str] = []
    for word in args:  # ``host=web-*`` is ``host web-*``
        name, equals, value = word.partition("=")
        pieces += [name, value] if equals and not pieces[-1:] == ["exec"] else [word]
    criteria: List[Criterion] = []
    i = 0
    while i < len(pieces):
        negated = pieces[i].startswith("!")
        name = pieces[i][1:].lower() if negated else pieces[i].lower()
        i += 1
        if name not in MATCH_CRITERIA and name not in MATCH_UNSUPPORTED:
            raise ValueError("unknown Match criterion %r (OpenSSH's are %s)" % (
                pieces[i - 1], ", ".join(MATCH_CRITERIA[:3] + ("exec",) + MATCH_CRITERIA[3:])))
        argument = ""
        if name not in ("all", "canonical", "final"):
            if i >= len(pieces) or not pieces[i]:
                raise ValueError("Match %s needs an argument" % name)
            argument, i = pieces[i], i + 1
        criteria.append(Criterion(name, negated, argument))
    names = [criterion.name for criterion in criteria]
    if "all" in names and (names[-1] != "all" or set(names[:-1]) - {"canonical", "final"}):
        raise ValueError("'all' cannot be combined with other Match criteria (only after canonical or final)")
    return tuple(criteria)


STRUCTURE: Dict[str, Callable[[List[str], str], Any]] = {"host": _all, "match": _match, "include": _all}


# -- files ------------------------------------------------------------------------------------

def parse(text: str, path: str) -> Parsed:
    """The lines of a configuration file that matter, checked; ``path`` names it in errors."""
    lines: List[Line] = []
    unsupported: Dict[str, None] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        where = "%s line %d" % (path, number)
        split = split_line(raw)
        if split is None:
            continue
        spelled, rest = split
        keyword = spelled.lower()
        keyword = ALIASES.get(keyword, keyword)
        try:
            args = words(rest)
        except ValueError as exc:
            raise ConfigError("%s: cannot parse %r: %s" % (where, raw.strip(), exc)) from None
        if keyword in IGNORED:
            continue
        if keyword in UNSUPPORTED:
            unsupported[spelled] = None
            continue
        convert = HONOURED.get(keyword) or STRUCTURE.get(keyword)
        if convert is None:
            lines.append(Line(number, UNKNOWN, spelled, None))
            continue
        if not any(args):
            raise ConfigError("%s: %s needs an argument" % (where, spelled))
        try:
            value = convert(args, rest)
        except ValueError as exc:
            shown = rest if keyword == "match" else " ".join(args)
            raise ConfigError("%s: bad %s %r: %s" % (where, spelled, shown, exc)) from None
        if keyword == "match":
            for criterion in value:
                if criterion.name in MATCH_UNSUPPORTED:
                    unsupported["Match " + criterion.name] = None
        lines.append(Line(number, keyword, spelled, value))
    return Parsed(path, tuple(lines), tuple(unsupported))


# The system's configuration files: what they set that chopsticks does not apply is a debug event.
SYSTEM_FOLDER = "/etc/ssh"


def read(path: str) -> Optional[Parsed]:
    """``path`` parsed, from the cache while the file is unchanged; None if it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    return _parse_file(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _parse_file(path: str, size: int, mtime_ns: int) -> Parsed:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:  # removed since the stat
        return Parsed(path, (), ())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cannot read %s: %s" % (path, exc)) from None
    parsed = parse(text, path)
    if parsed.unsupported:
        # the system's own files (stock Debian's sets SendEnv and GSSAPIAuthentication): a debug
        # event, or every run would warn of what the user did not write and cannot act on
        report = logs.event if os.path.abspath(path).startswith(SYSTEM_FOLDER + os.sep) else logs.warning
        report("ssh_config_unsupported", file=path, keywords=list(parsed.unsupported),
               note="chopsticks does not apply these; a Match with an unsupported criterion never applies")
    return parsed
