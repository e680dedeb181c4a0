"""How wide text shows on a terminal, in columns, for lining up tables. CLI layer.

A character of East Asian width W or F (CJK, most emoji) takes two columns; a combining mark,
an enclosing mark or a format character (a zero-width joiner, a variation selector) none;
anything else one. Text measured here was made ``logs.visible`` first, so it holds no control
characters. Terminals differ on a few sequences (an emoji joined by U+200D to another shows as
one glyph on some, two on others); those count as the sum of their characters.
"""

import unicodedata

_WIDE = frozenset("WF")
_ZERO_WIDTH = frozenset(("Mn", "Me", "Cf"))


def _char(char: str) -> int:
    if unicodedata.category(char) in _ZERO_WIDTH:
        return 0
    return 2 if unicodedata.east_asian_width(char) in _WIDE else 1


def columns(text: str) -> int:
    """The columns ``text`` takes on a terminal."""
    if text.isascii():
        return len(text)
    return sum(_char(char) for char in text)


def clip(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` columns, else as much of it as fits before a ``…``."""
    if columns(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        used += _char(char)
        if used > width - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def pad(text: str, width: int) -> str:
    """``text`` with spaces after it up to ``width`` columns (a wider one is left as it is)."""
    return text + " " * (width - columns(text))
