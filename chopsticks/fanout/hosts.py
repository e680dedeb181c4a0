"""Host lists from the shell: ranges such as ``web-[001-500]``, hosts files, stdin. CLI layer.

A bracket expands to a list: ``[1-5]`` counts, ``[001-500]`` keeps the zero padding of its
first bound, ``[a-f]`` runs through letters, ``[1,3,7-9]`` combines them. Several brackets
multiply: ``10.0.[1-3].[1-254]`` is 762 hosts. A bracket holding a colon is an IPv6 address
(``[::1]:2222``) and stays as written. Every mistake is a ``HostSpecError`` saying what is wrong.

``fold`` goes the other way, for showing many hosts at once: names that differ only in a number
fold into one bracket (``web-001`` ... ``web-480``, ``web-482`` -> ``web-[001-480,482]``), and
``expand`` of what it makes gives the same names back.
"""

import dataclasses
import math
import re
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

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


# -- folding: names back into patterns ---------------------------------------------------------

# What a name is cut into: an IPv6 bracket (kept whole, as ``_parse`` keeps it) or a number.
_FIELD = re.compile(r"\[[^\]]*\]|[0-9]+")


def _fields(name: str) -> Optional[Tuple[Tuple[str, ...], List[str]]]:
    """``'web-01.dc2'`` -> ``(('web-', '.dc', ''), ['01', '2'])``: the text around each number,
    and the numbers. None for a name that cannot fold: no number, a bare IPv6 address (its hex
    groups are not counters), or a name that is not its own pattern (brackets ``expand`` would
    read, never in what it makes)."""
    if "[" in name or "]" in name:
        try:
            if expand(name) != [name]:
                return None
        except HostSpecError:
            return None
    texts: List[str] = []
    numbers: List[str] = []
    text, position = "", 0
    for match in _FIELD.finditer(name):
        text += name[position:match.start()]
        if match.group().startswith("["):
            text += match.group()
        else:
            texts.append(text)
            numbers.append(match.group())
            text = ""
        position = match.end()
    texts.append(text + name[position:])
    if not numbers or re.sub(r"\[[^\]]*\]", "", name).count(":") > 1:
        return None
    return tuple(texts), numbers


def _bracket_of(numbers: Iterable[str]) -> str:
    """Number strings as the bracket ``expand`` reads back into exactly them: ``['1', '2', '3',
    '7']`` -> ``'[1-3,7]'``, ``['08', '09', '10']`` -> ``'[08-10]'``; one number is itself.

    A run's first bound sets its zero padding (as ``_bracket`` reads it), so a padded number
    joins only a run of its own width; an unpadded one (``10``) also joins a padded run as
    long as it is at least that wide (``09``, ``10`` are ``[09-10]``)."""
    unique = sorted(set(numbers), key=lambda text: (int(text), len(text)))
    if len(unique) == 1:
        return unique[0]
    runs: List[List[int]] = []  # [first, last, width]; width 0: unpadded
    open_runs: Dict[int, List[int]] = {}  # the latest run of each width
    for text in unique:
        value = int(text)
        padded = len(text) > 1 and text.startswith("0")
        widths = [len(text)] if padded else [0] + [width for width in open_runs if 0 < width <= len(text)]
        run = next((open_runs[width] for width in widths if width in open_runs and open_runs[width][1] == value - 1),
                   None)
        if run is not None:
            run[1] = value
            continue
        run = [value, value, widths[0]]
        runs.append(run)
        open_runs[run[2]] = run
    items = [str(first).zfill(width) + ("-" + str(last).zfill(width) if last != first else "")
             for first, last, width in runs]
    return "[%s]" % ",".join(items)


def fold(names: Iterable[str]) -> List[str]:
    """Patterns that ``expand`` back into ``names`` (as a set, each name once), in the order of
    the names: ``['web-1', 'web-2', 'web-3', 'db']`` -> ``['web-[1-3]', 'db']``.

    Names with the same text around their numbers fold together. The last number that differs
    among them folds first; then an earlier one, where every combination is there:
    ``10.0.1.1`` ... ``10.0.3.254`` -> ``10.0.[1-3].[1-254]``, but ``a1-b1``, ``a1-b2``,
    ``a2-b1`` -> ``a1-b[1-2]``, ``a2-b1``. Zero padding is kept (``web-[001-480]``). A name
    without a number, a bare IPv6 address and a name that is not its own pattern stay as they
    are; the number of an IPv6 bracket's port folds (``[::1]:[2222-2223]``)."""
    patterns: List[Tuple[int, str]] = []
    shapes: Dict[Tuple[str, ...], List[Tuple[int, List[str]]]] = {}
    for index, name in enumerate(dict.fromkeys(names)):
        fields = _fields(name)
        if fields is None:
            patterns.append((index, name))
        else:
            shapes.setdefault(fields[0], []).append((index, fields[1]))
    for texts, rows in shapes.items():
        unfolded = list(range(len(texts) - 1))
        while len(rows) > 1:
            varying = [field for field in unfolded if len({numbers[field] for _, numbers in rows}) > 1]
            if not varying:
                break
            field = varying[-1]
            unfolded.remove(field)
            groups: Dict[Tuple[str, ...], Tuple[int, List[str]]] = {}
            for index, numbers in rows:
                key = tuple(numbers[:field] + numbers[field + 1:])
                first, members = groups.setdefault(key, (index, []))
                members.append(numbers[field])
            rows = [(first, [*key[:field], _bracket_of(members), *key[field:]])
                    for key, (first, members) in groups.items()]
        for index, numbers in rows:
            patterns.append((index, "".join(text + number for text, number in zip(texts, numbers + [""]))))
    return [pattern for _, pattern in sorted(patterns)]
