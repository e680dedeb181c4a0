"""Host lists from the shell: ranges such as ``web-[001-500]``, hosts files, stdin. Controller-side.

A bracket expands to a list: ``[1-5]`` counts, ``[001-500]`` keeps the zero padding of its
first bound, ``[a-f]`` runs through letters, ``[1,3,7-9]`` combines them. Several brackets
multiply: ``10.0.[1-3].[1-254]`` is 762 hosts. A bracket holding a colon is an IPv6 address
(``[::1]:2222``) and stays as written. Every mistake is a ``HostSpecError`` saying what is wrong.
"""

import math
import re
import sys
from typing import Dict, Iterable, List, Sequence

MAX_HOSTS = 1_000_000  # a typo such as [1-10000000] fails instead of eating the machine

_NUMBERS = re.compile(r"^(\d+)(?:-(\d+))?$")
_LETTERS = re.compile(r"^([a-zA-Z])(?:-([a-zA-Z]))?$")


class HostSpecError(ValueError):
    """A host list or range that cannot be read."""


def _bracket_values(content: str, pattern: str) -> List[str]:
    values: List[str] = []
    for item in content.split(","):
        item = item.strip()
        numbers, letters = _NUMBERS.match(item), _LETTERS.match(item)
        if numbers:
            first, last = numbers.group(1), numbers.group(2) or numbers.group(1)
            start, stop = int(first), int(last)
            width = len(first) if first.startswith("0") and len(first) > 1 else 0
            if stop < start:
                raise HostSpecError("range [%s] in %r runs backwards" % (item, pattern))
            if stop - start >= MAX_HOSTS:
                raise HostSpecError("range [%s] in %r is more than %d hosts" % (item, pattern, MAX_HOSTS))
            values.extend(str(n).zfill(width) for n in range(start, stop + 1))
        elif letters:
            first, last = letters.group(1), letters.group(2) or letters.group(1)
            if first.islower() != last.islower() or ord(last) < ord(first):
                raise HostSpecError("range [%s] in %r is not a run of letters" % (item, pattern))
            values.extend(chr(c) for c in range(ord(first), ord(last) + 1))
        else:
            raise HostSpecError("malformed range [%s] in %r: expected numbers like [1-9] or [001-250], "
                                "letters like [a-f], or a list like [1,3,5-7]" % (content, pattern))
    return values


def expand(pattern: str) -> List[str]:
    """``'web-[01-03]'`` -> ``['web-01', 'web-02', 'web-03']``; a name without brackets is itself."""
    parts: List[List[str]] = []  # literal text and bracket choices, alternating
    literal = ""
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "]":
            raise HostSpecError("']' without '[' in %r" % pattern)
        if char != "[":
            literal += char
            position += 1
            continue
        end = pattern.find("]", position)
        if end < 0:
            raise HostSpecError("unclosed '[' in %r" % pattern)
        content = pattern[position + 1:end]
        if "[" in content:
            raise HostSpecError("brackets cannot nest, in %r" % pattern)
        if ":" in content:  # an IPv6 address, as in [::1]:22
            literal += pattern[position:end + 1]
        else:
            parts.append([literal])
            parts.append(_bracket_values(content, pattern))
            literal = ""
        position = end + 1
    parts.append([literal])
    count = math.prod(len(choices) for choices in parts)
    if count > MAX_HOSTS:
        raise HostSpecError("%r expands to %d hosts, more than %d" % (pattern, count, MAX_HOSTS))
    names = [""]
    for choices in parts:
        names = [name + choice for name in names for choice in choices]
    return names


def split(text: str) -> List[str]:
    """Host patterns in ``text``: separated by whitespace or commas outside brackets; ``#`` comments."""
    words: List[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        word, depth = "", 0
        for char in line:
            depth += {"[": 1, "]": -1}.get(char, 0)
            if depth == 0 and (char == "," or char.isspace()):
                if word:
                    words.append(word)
                word = ""
            else:
                word += char
        if word:
            words.append(word)
    return words


def read_file(path: str) -> str:
    """A hosts file's text; ``-`` is stdin."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise HostSpecError("cannot read hosts file %r: %s" % (path, exc.strerror)) from None
    except UnicodeDecodeError:
        raise HostSpecError("hosts file %r is not UTF-8 text" % path) from None


def collect(specs: Sequence[str], files: Iterable[str] = ()) -> List[str]:
    """Every host named by ``specs`` (arguments) and ``files``, expanded, duplicates dropped, in order."""
    patterns = [word for spec in specs for word in split(spec)]
    for path in files:
        patterns.extend(split(read_file(path)))
    seen: Dict[str, None] = {}
    for pattern in patterns:
        for name in expand(pattern):
            seen.setdefault(name, None)
            if len(seen) > MAX_HOSTS:
                raise HostSpecError("more than %d hosts" % MAX_HOSTS)
    return list(seen)
