"""Host lists from the shell: ranges such as ``web-[001-500]``, hosts files, stdin. CLI layer.

A bracket expands to a list: ``[1-5]`` counts, ``[001-500]`` keeps the zero padding of its
first bound, ``[a-f]`` runs through letters, ``[1,3,7-9]`` combines them. Several brackets
multiply: ``10.0.[1-3].[1-254]`` is 762 hosts. A bracket holding a colon is an IPv6 address
(``[::1]:2222``) and stays as written. Every mistake is a ``HostSpecError`` saying what is wrong.
"""

import dataclasses
import math
import re
import sys
from typing import Dict, Iterable, Iterator, List, Sequence, Union

MAX_HOSTS = 1_000_000  # a typo such as [1-10000000] fails instead of eating the machine

_NUMBERS = re.compile(r"^(\d+)(?:-(\d+))?$")
_LETTERS = re.compile(r"^([a-zA-Z])(?:-([a-zA-Z]))?$")


class HostSpecError(ValueError):
    """A host list or range that cannot be read."""


@dataclasses.dataclass(frozen=True)
class _Run:
    """One item of a bracket: the numbers or letters from ``first`` to ``last``, counted
    before any is made."""

    first: int
    last: int
    width: int  # zero padding of numbers; 0: numbers unpadded; -1: letters (code points)

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def values(self) -> Iterator[str]:
        if self.width < 0:
            return (chr(code) for code in range(self.first, self.last + 1))
        return (str(n).zfill(self.width) for n in range(self.first, self.last + 1))


Choice = Union[str, _Run]  # literal text, or a bracket's run of values


def _bracket(content: str, pattern: str) -> List[Choice]:
    runs: List[Choice] = []
    for item in content.split(","):
        item = item.strip()
        numbers, letters = _NUMBERS.match(item), _LETTERS.match(item)
        if numbers:
            first, last = numbers.group(1), numbers.group(2) or numbers.group(1)
            width = len(first) if first.startswith("0") and len(first) > 1 else 0
            run = _Run(int(first), int(last), width)
            if run.last < run.first:
                raise HostSpecError("range [%s] in %r runs backwards" % (item, pattern))
            runs.append(run)
        elif letters:
            first, last = letters.group(1), letters.group(2) or letters.group(1)
            if first.islower() != last.islower() or ord(last) < ord(first):
                raise HostSpecError("range [%s] in %r is not a run of letters" % (item, pattern))
            runs.append(_Run(ord(first), ord(last), -1))
        else:
            raise HostSpecError("malformed range [%s] in %r: expected numbers like [1-9] or [001-250], "
                                "letters like [a-f], or a list like [1,3,5-7]" % (content, pattern))
    return runs


def _parse(pattern: str) -> List[List[Choice]]:
    """The pattern as parts whose choices multiply: literal text is a part of one choice."""
    parts: List[List[Choice]] = []  # literal text and bracket runs, alternating
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
            parts.append(_bracket(content, pattern))
            literal = ""
        position = end + 1
    parts.append([literal])
    return parts


def _choices(part: List[Choice]) -> int:
    return sum(1 if isinstance(choice, str) else choice.size for choice in part)


def count(pattern: str) -> int:
    """How many names ``pattern`` expands to, without making them."""
    return math.prod(_choices(part) for part in _parse(pattern))


def _check_count(hosts: int, what: str) -> None:
    if hosts > MAX_HOSTS:
        raise HostSpecError("%s %s hosts, more than the limit of %s" % (what, "{:,}".format(hosts),
                                                                      "{:,}".format(MAX_HOSTS)))


def expand(pattern: str) -> List[str]:
    """``'web-[01-03]'`` -> ``['web-01', 'web-02', 'web-03']``; a name without brackets is itself.
    Counted first: more than ``MAX_HOSTS`` is refused before any name is made."""
    parts = _parse(pattern)
    _check_count(math.prod(_choices(part) for part in parts), "%r expands to" % pattern)
    names = [""]
    for part in parts:
        choices = [value for choice in part
                   for value in ([choice] if isinstance(choice, str) else choice.values())]
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
    counts = [count(pattern) for pattern in patterns]
    for pattern, hosts in zip(patterns, counts):
        _check_count(hosts, "%r expands to" % pattern)
    _check_count(sum(counts), "the host list names")
    seen: Dict[str, None] = {}
    for pattern in patterns:
        for name in expand(pattern):
            seen.setdefault(name, None)
    return list(seen)
