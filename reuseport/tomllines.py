"""Where a key of a TOML document is written: its line, for one-line error messages.

``tomllib`` keeps no positions, so the raw text is scanned: table headers (``[a.b]``,
``[[a]]``) and ``key = value`` lines, with dotted and quoted keys. A key inside an inline
table (``web = { image = "x" }``) is found at the line of the nearest enclosing key that
starts a line; a key that is absent at its table's header. Lines inside multi-line strings
and arrays are skipped, not mistaken for keys.
"""

from __future__ import annotations

import re

_BARE_RE = re.compile(r"[A-Za-z0-9_-]+")
_SPACE_RE = re.compile(r"[ \t]*")

KeyPath = tuple[str, ...]


class KeyLines:
    """The first line (1-based) of every table header and every key that starts a line."""

    def __init__(self, text: str) -> None:
        self._lines: dict[KeyPath, int] = {}
        table: KeyPath = ()
        skip_until: str | None = None  # the closing quotes of a multi-line string
        depth = 0  # open brackets of a multi-line array or inline table
        for number, line in enumerate(text.splitlines(), start=1):
            if skip_until is not None:
                if line.count(skip_until) % 2 == 1:
                    skip_until = None
                continue
            if depth > 0:
                depth = max(0, depth + _bracket_balance(line))
                continue
            stripped = line.strip()
            if stripped.startswith("["):
                header = _parse_key(stripped.lstrip("["), 0)
                if header is not None:
                    table = header[0]
                    self._lines.setdefault(table, number)
                continue
            parsed = _parse_key(line, 0)
            if parsed is None or not line[parsed[1] :].lstrip().startswith("="):
                continue
            self._lines.setdefault(table + parsed[0], number)
            value = line[parsed[1] :].lstrip()[1:]
            for quotes in ('"""', "'''"):
                if value.count(quotes) % 2 == 1:
                    skip_until = quotes
            depth = max(0, _bracket_balance(value))

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, else of its nearest ancestor written on a line, else 1."""
        for end in range(len(path), 0, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        return 1


def _parse_key(text: str, start: int) -> tuple[KeyPath, int] | None:
    """A dotted key at ``text[start:]`` (leading blanks allowed) and where it ends."""
    parts: list[str] = []
    pos = start
    while True:
        pos = _SPACE_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos < len(text) and text[pos] in "\"'":
            close = text.find(text[pos], pos + 1)
            if close < 0:
                return None
            parts.append(text[pos + 1 : close])
            pos = close + 1
        else:
            bare = _BARE_RE.match(text, pos)
            if bare is None:
                return None
            parts.append(bare.group())
            pos = bare.end()
        after = _SPACE_RE.match(text, pos).end()  # type: ignore[union-attr]
        if after < len(text) and text[after] == ".":
            pos = after + 1
            continue
        return tuple(parts), pos


def _bracket_balance(value: str) -> int:
    """Opened minus closed brackets and braces in ``value``, outside strings and comments."""
    balance = 0
    quote: str | None = None
    for char in value:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char in "[{":
            balance += 1
        elif char in "]}":
            balance -= 1
    return balance
