"""Env files (a project file's ``env-file``): ``KEY=VALUE`` lines, as Compose reads them.

Blank lines and lines starting with ``#`` are ignored, ``export KEY=VALUE`` is read as
``KEY=VALUE``, blanks around the key and the value are dropped and one pair of matching
quotes around the value is removed. Values are taken as written: no ``$`` interpolation.
A later line (or file) sets a key again over an earlier one.
"""

from __future__ import annotations

from pathlib import Path

from reuseport.spec import is_env_key


class EnvFileError(ValueError):
    """An env file cannot be read or has a malformed line; the message names the file and,
    for a malformed line, its number, never a value (values may be secrets)."""


def read_env_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise EnvFileError(f"cannot read env file {path}: {reason}") from None
    return parse_env_lines(text, str(path))


def parse_env_lines(text: str, source: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not is_env_key(key):
            raise EnvFileError(
                f"{source}:{number}: expected KEY=VALUE with KEY like [A-Za-z_][A-Za-z0-9_]*"
            )
        values[key] = _unquoted(value.strip())
    return values


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
