"""Compose-style ``$`` interpolation of a project file's strings from the environment.

``${VAR}`` and ``$VAR``: the variable's value; an unset one is an error. ``${VAR:-default}``:
the default when VAR is unset or empty; ``${VAR-default}``: only when unset. A default may
itself hold ``${...}``. ``${VAR:?message}``: an error saying ``message`` when VAR is unset or
empty; ``${VAR?message}``: only when unset. ``$$`` is a literal ``$``; a ``$`` before
anything else stays as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", "-", ":?", "?")


class InterpolationError(ValueError):
    """A string cannot be interpolated; the message says why and names the variable."""


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with every ``$`` reference replaced (see the module's docstring)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        dollar = text.find("$", i)
        if dollar < 0:
            out.append(text[i:])
            break
        out.append(text[i:dollar])
        nxt = text[dollar + 1 : dollar + 2]
        if nxt == "$":
            out.append("$")
            i = dollar + 2
        elif nxt == "{":
            close = _closing_brace(text, dollar + 2)
            out.append(_braced(text[dollar + 2 : close], environ))
            i = close + 1
        elif bare := _NAME_RE.match(text, dollar + 1):
            out.append(_lookup(bare.group(), environ))
            i = bare.end()
        else:
            out.append("$")
            i = dollar + 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise InterpolationError("unterminated '${': close it with '}' (or write $$ for a '$')")


def _braced(inner: str, environ: Mapping[str, str]) -> str:
    name = _NAME_RE.match(inner)
    rest = inner[name.end() :] if name else inner
    if name is None or (rest and not rest.startswith(_OPERATORS)):
        raise InterpolationError(
            f"invalid reference '${{{inner}}}': use ${{VAR}}, ${{VAR:-default}}, "
            "${VAR-default}, ${VAR:?message} or ${VAR?message} with VAR like "
            "[A-Za-z_][A-Za-z0-9_]*"
        )
    var = name.group()
    if rest.startswith((":?", "?")):
        colon = rest.startswith(":")
        if environ.get(var) if colon else var in environ:
            return environ[var]
        # The file's own words, interpolated (never a variable's value: it is unset).
        said = interpolate(rest[2 if colon else 1 :], environ) or "required"
        unset = "is not set or empty" if colon else "is not set"
        raise InterpolationError(f"variable {var} {unset}: {said}")
    if rest.startswith(":-"):
        value = environ.get(var)
        return value if value else interpolate(rest[2:], environ)
    if rest.startswith("-"):
        return environ[var] if var in environ else interpolate(rest[1:], environ)
    return _lookup(var, environ)


def _lookup(var: str, environ: Mapping[str, str]) -> str:
    if var not in environ:
        raise InterpolationError(
            f"variable {var} is not set (set it, or give a default: ${{{var}:-default}})"
        )
    return environ[var]


def escape(text: str) -> str:
    """``text`` written so that interpolating it gives ``text`` back (``$`` as ``$$``)."""
    return text.replace("$", "$$")
