"""OpenSSH ``known_hosts`` files: look up and record host keys. Controller-side, pure logic.

Supports what OpenSSH writes and reads: comma-separated host patterns with ``*`` and ``?``
wildcards and ``!`` negation, hashed names (``|1|salt|hash``, HMAC-SHA1), ``[host]:port``
for non-default ports, ``@revoked`` keys (refused) and ``@cert-authority`` lines (ignored:
certificates are not supported). A key is compared by its full blob, so a match is exact.
"""

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import struct
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

# Outcomes of a lookup.
MATCH = "match"  # the host is known with exactly this key
UNKNOWN = "unknown"  # no key of this type is recorded for the host
CHANGED = "changed"  # the host is known with a different key of the same type
REVOKED = "revoked"  # the key is marked @revoked


class Entry(NamedTuple):
    marker: str  # "", "@revoked" or "@cert-authority"
    patterns: Tuple[str, ...]
    key_type: str
    key: bytes


def host_name(host: str, port: int) -> str:
    """The name known_hosts uses: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if port == 22 else "[%s]:%d" % (host, port)


def key_type_of(blob: bytes) -> str:
    """The algorithm name a public key blob starts with (``ssh-ed25519`` ...)."""
    if len(blob) < 4:
        return ""
    (size,) = struct.unpack(">I", blob[:4])
    return blob[4:4 + size].decode("ascii", "replace")


class Index:
    """A known_hosts file's entries, indexed: plain host names in a dict, so that checking
    a thousand hosts against a thousand-line file costs a thousand lookups, not a million
    pattern matches. Entries with wildcards, negations or hashed names are matched in order."""

    def __init__(self, entries: List[Entry]):
        self.entries = entries
        self.revoked = {entry.key for entry in entries if entry.marker == "@revoked"}
        self.by_name: Dict[str, List[Entry]] = {}
        self.patterned: List[Entry] = []
        for entry in entries:
            if entry.marker:
                continue
            if all(_plain(pattern) for pattern in entry.patterns):
                for pattern in entry.patterns:
                    self.by_name.setdefault(pattern.lower(), []).append(entry)
            else:
                self.patterned.append(entry)

    def naming(self, name: str) -> List[Entry]:
        """The (non-marker) entries whose patterns match ``name``."""
        found = list(self.by_name.get(name.lower(), ()))
        found.extend(entry for entry in self.patterned if matches(entry.patterns, name))
        return found


def _plain(pattern: str) -> bool:
    return not pattern.startswith(("!", "|")) and "*" not in pattern and "?" not in pattern


def parse(lines: Iterable[str]) -> Index:
    """A known_hosts file's entries; lines that do not parse are skipped, like OpenSSH does."""
    entries = []
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = ""
        if fields[0].startswith("@"):
            marker, fields = fields[0], fields[1:]
        if len(fields) < 3:
            continue
        try:
            key = base64.b64decode(fields[2], validate=True)
        except (binascii.Error, ValueError):
            continue
        entries.append(Entry(marker, tuple(fields[0].split(",")), fields[1], key))
    return Index(entries)


def _hashed_match(pattern: str, name: str) -> bool:
    try:
        _, one, salt, digest = pattern.split("|")
        if one != "1":
            return False
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mac, base64.b64decode(digest))
    except (ValueError, binascii.Error):
        return False


@functools.lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> "re.Pattern[str]":
    """OpenSSH patterns: ``*`` and ``?`` only (brackets are literal, unlike fnmatch)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern))


def matches(patterns: Iterable[str], name: str) -> bool:
    """Whether ``name`` matches a pattern list: any positive match and no negated one."""
    hit = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if pattern.startswith("|1|"):
            found = _hashed_match(pattern, name)
        else:
            found = _wildcard(pattern.lower()).fullmatch(name.lower()) is not None
        if found and negated:
            return False
        hit = hit or found
    return hit


def _indexes(known: Union[Index, Sequence[Index]]) -> Sequence[Index]:
    return [known] if isinstance(known, Index) else known


def check(known: Union[Index, Sequence[Index]], host: str, port: int, key: bytes) -> str:
    """MATCH, UNKNOWN, CHANGED or REVOKED for ``key`` presented by ``host:port``."""
    name = host_name(host, port)
    key_type = key_type_of(key)
    result = UNKNOWN
    for index in _indexes(known):
        if key in index.revoked:
            return REVOKED
        for entry in index.naming(name):
            if entry.key == key:
                result = MATCH
            elif key_type_of(entry.key) == key_type and result != MATCH:
                result = CHANGED
    return result


def read(paths: Iterable[str]) -> List[Index]:
    """The indexed entries of every readable file in ``paths`` (missing files count as empty).

    Parsed files are cached by path, size and mtime: a fleet of a thousand hosts reads a
    known_hosts file once, and a key recorded by accept-new is seen at once.
    """
    indexes: List[Index] = []
    for path in paths:
        path = os.path.expanduser(path)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            continue
        indexes.append(_read_file(path, stat.st_size, stat.st_mtime_ns))
    return indexes


@functools.lru_cache(maxsize=32)
def _read_file(path: str, size: int, mtime_ns: int) -> Index:
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse(f)


def hashed_name(name: str, salt: Optional[bytes] = None) -> str:
    """``name`` as OpenSSH's HashKnownHosts writes it: ``|1|salt|HMAC-SHA1(salt, name)``."""
    salt = os.urandom(20) if salt is None else salt
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return "|1|%s|%s" % (base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def line_for(host: str, port: int, key: bytes, hashed: bool = False) -> str:
    name = host_name(host, port)
    return "%s %s %s\n" % (hashed_name(name) if hashed else name, key_type_of(key), base64.b64encode(key).decode())


def append(path: str, host: str, port: int, key: bytes, hashed: bool = False) -> None:
    """Record a newly accepted key (``accept-new``), creating the file and its directory; with
    ``hashed`` (HashKnownHosts), the host's name is written hashed."""
    path = os.path.expanduser(path)
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line_for(host, port, key, hashed))


def fingerprint(key: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key).digest()).decode().rstrip("=")


def lookup_line(known: Union[Index, Sequence[Index]], host: str, port: int) -> Optional[Entry]:
    """The first non-marker entry that names this host, for error messages."""
    name = host_name(host, port)
    for index in _indexes(known):
        found = index.naming(name)
        if found:
            return found[0]
    return None
