"""A strict parser and printer for Xen's SXP (s-expression) config syntax.

Xen's own parser (xen/xend/sxp.py) was lenient: unknown escapes became a backslash, a failed
string ``eval`` fell back to stripping quotes, and errors had no useful position. Config files
are written by hand, so we accept the same grammar but refuse anything doubtful, and every
error is an :class:`~ovsvnet.errors.SxpError` that points at the line and column to fix.

Grammar (xen_vnet.md §5.2): whitespace is space, \\t \\n \\v \\f \\r; ``#`` comments to end of
line; lists in ``( )``; atoms are runs of printable characters ending at whitespace, ``#`` or
one of ``{}()<>[]!;``; strings in ``"`` or ``'`` with C escapes. As in the original, a string
may span lines and may hold any character literally.

The parser is iterative (an explicit stack), so deeply nested input cannot raise
RecursionError: parsing any text raises nothing but SxpError.
"""

from __future__ import annotations

import string
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from .errors import SxpError

WHITESPACE = " \t\n\v\f\r"
DELIMITERS = "{}()<>[]!;"
STRAY = "{}<>[]!;"
"""Delimiters with no meaning of their own: outside a string they are always a mistake."""
COMMENT = "#"
QUOTES = "\"'"
ESCAPES: dict[str, str] = {
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "\\": "\\",
    "'": "'",
    '"': '"',
}
BARE_CHARS = frozenset(string.ascii_letters + string.digits + ".-_:/~")
"""Characters an atom may hold and still be written unquoted (as Xen's ``show`` did)."""

_KNOWN_ESCAPES = r"\a \b \t \n \v \f \r \\ \' \" \xHH \ooo"
_HEX = frozenset(string.hexdigits)
_OCT = frozenset(string.octdigits)
_DUMP_ESCAPES = {v: "\\" + k for k, v in ESCAPES.items() if k != '"'}


class Atom(str):
    """A string that remembers where it was written, so later checks can point at it."""

    line: int
    column: int
    quoted: bool

    def __new__(cls, value: str, line: int = 0, column: int = 0, quoted: bool = False) -> Atom:
        self = super().__new__(cls, value)
        self.line = line
        self.column = column
        self.quoted = quoted
        return self


class SList(list["Node"]):
    """A list that remembers the position of its opening parenthesis."""

    def __init__(self, items: Iterable[Node] = (), line: int = 0, column: int = 0) -> None:
        super().__init__(items)
        self.line = line
        self.column = column


Node = Atom | SList
SxpValue = str | Sequence["SxpValue"]
"""What :func:`dumps` accepts: a string, or a list/tuple of such values."""


def parse_all(text: str, source: str = "<input>") -> list[Node]:
    """Parse every top-level expression in ``text``."""
    return _Parser(text, source).parse()


def parse_one(text: str, source: str = "<input>") -> Node:
    """Parse exactly one expression; config files hold one, as ``xm vnet-create`` required."""
    parser = _Parser(text, source)
    nodes = parser.parse()
    if not nodes:
        raise parser.error("no expression found", len(text))
    if len(nodes) > 1:
        second = nodes[1]
        raise SxpError(
            "expected exactly one expression, found a second one",
            second.line,
            second.column,
            source,
        )
    return nodes[0]


def dumps(value: SxpValue) -> str:
    """One-line SXP text that :func:`parse_one` reads back to an equal value."""
    if isinstance(value, str):
        return _dump_atom(value)
    if isinstance(value, (list, tuple)):
        return "(" + " ".join(dumps(item) for item in value) + ")"
    raise TypeError(f"cannot write {type(value).__name__} as SXP; use str, list or tuple")


def _dump_atom(value: str) -> str:
    """Bare when safe, else single-quoted with escapes for anything a reader could misread."""
    if value and all(c in BARE_CHARS for c in value):
        return value
    out = ["'"]
    for c in value:
        if c in _DUMP_ESCAPES:
            out.append(_DUMP_ESCAPES[c])
        elif ord(c) <= 0xFF and not c.isprintable():
            out.append(f"\\x{ord(c):02x}")
        else:
            # Beyond Latin-1 there is no escape in this grammar; strings hold it literally.
            out.append(c)
    out.append("'")
    return "".join(out)


def _describe(c: str) -> str:
    """Name a character so that invisible ones show up in messages."""
    if c.isprintable():
        return repr(c)
    if unicodedata.category(c) == "Cc":
        return f"control character U+{ord(c):04X}"
    return f"non-printable character U+{ord(c):04X}"


class _Parser:
    """One pass over the text; positions are computed from indexes only when needed."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]

    def position(self, index: int) -> tuple[int, int]:
        """1-based (line, column) of ``index``; columns count characters."""
        line = bisect_left(self._newlines, index)
        start = self._newlines[line - 1] + 1 if line else 0
        return line + 1, index - start + 1

    def error(self, message: str, index: int) -> SxpError:
        line, column = self.position(index)
        return SxpError(message, line, column, self.source)

    def parse(self) -> list[Node]:
        text = self.text
        end = len(text)
        top: list[Node] = []
        stack: list[SList] = []
        i = 0
        while i < end:
            c = text[i]
            if c in WHITESPACE:
                i += 1
            elif c == COMMENT:
                newline = text.find("\n", i)
                i = end if newline < 0 else newline
            elif c == "(":
                stack.append(SList((), *self.position(i)))
                i += 1
            elif c == ")":
                if not stack:
                    raise self.error("unexpected ')' at top level: no list is open", i)
                done = stack.pop()
                (stack[-1] if stack else top).append(done)
                i += 1
            elif c in QUOTES:
                atom, i = self._string(i)
                (stack[-1] if stack else top).append(atom)
            elif c in STRAY:
                raise self.error(f"unexpected character {c!r}{_stray_hint(c)}", i)
            elif not c.isprintable():
                raise self.error(f"unexpected {_describe(c)}", i)
            else:
                j = i + 1
                while j < end and _continues_atom(text[j]):
                    j += 1
                (stack[-1] if stack else top).append(Atom(text[i:j], *self.position(i)))
                i = j
        if stack:
            line, column = stack[-1].line, stack[-1].column
            raise self.error(
                f"unexpected end of input: list opened at {line}:{column} is not closed", end
            )
        return top

    def _string(self, start: int) -> tuple[Atom, int]:
        """Read a quoted string starting at ``start``; return it and the index after it."""
        text = self.text
        quote = text[start]
        buf: list[str] = []
        i = start + 1
        while True:
            if i >= len(text) or (text[i] == "\\" and i + 1 >= len(text)):
                raise self.error(f"unterminated string: no closing {quote} for this quote", start)
            c = text[i]
            if c == quote:
                return Atom("".join(buf), *self.position(start), quoted=True), i + 1
            if c != "\\":
                buf.append(c)
                i += 1
                continue
            decoded, length = self._escape(i)
            buf.append(decoded)
            i += length

    def _escape(self, i: int) -> tuple[str, int]:
        """Decode the escape whose backslash is at ``i``; return (character, length)."""
        text = self.text
        e = text[i + 1]
        if e in ESCAPES:
            return ESCAPES[e], 2
        if e == "x":
            digits = text[i + 2 : i + 4]
            if len(digits) == 2 and all(d in _HEX for d in digits):
                return chr(int(digits, 16)), 4
            raise self.error(r"bad escape: \x needs exactly 2 hex digits, as in \x1b", i)
        if e in _OCT:
            digits = text[i + 1 : i + 4]
            if len(digits) == 3 and all(d in _OCT for d in digits):
                value = int(digits, 8)
                if value <= 0o377:
                    return chr(value), 4
                raise self.error(f"bad escape: \\{digits} is above \\377", i)
            raise self.error(r"bad escape: octal escapes need exactly 3 digits, as in \033", i)
        shown = f" '\\{e}'" if e.isprintable() else f": backslash before {_describe(e)}"
        raise self.error(f"bad escape{shown}; known escapes are {_KNOWN_ESCAPES}", i)


def _continues_atom(c: str) -> bool:
    return c not in WHITESPACE and c != COMMENT and c not in DELIMITERS and c.isprintable()


def _stray_hint(c: str) -> str:
    if c == ";":
        return " (comments start with '#')"
    if c in "[]{}<>":
        return " (lists are written with '(' and ')')"
    return ""
