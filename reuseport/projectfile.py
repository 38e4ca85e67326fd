"""A project file (``reuseport.toml``): services declared once, validated like `up`'s flags.

One table per service, ``[services.NAME]``; its keys are the long flags of `up` and
`rollout` without dashes (``options.build_spec``'s parameters, so file and flags cannot
drift), plus ``env-file``, ``ready-timeout`` and ``rollout-timeout``. Every string is
interpolated from the environment (``reuseport.interpolate``); env-file values are not.
``env`` wins over env files. Every error is one :class:`ConfigFileError` line naming the
file, the line and the key: ``reuseport.toml:12: services.web.replicas: must be ...``.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reuseport import options
from reuseport.envfile import EnvFileError, read_env_file
from reuseport.errors import ConfigFileError, InvalidSpec
from reuseport.interpolate import InterpolationError, escape, interpolate
from reuseport.spec import ServiceSpec, is_env_key, redact_value, validate_name
from reuseport.tomllines import KeyLines, KeyPath

DEFAULT_FILE = "reuseport.toml"

# build_spec's parameters are the spec's keys; the name is the table's, env comes as a table.
_SPEC_TYPES: dict[str, Any] = {
    name.replace("_", "-"): hint
    for name, hint in typing.get_type_hints(options.build_spec).items()
    if name not in ("name", "env", "return")
}
_REQUIRED = tuple(
    name.replace("_", "-")
    for name, param in inspect.signature(options.build_spec).parameters.items()
    if param.default is inspect.Parameter.empty
)
_ENTRY_TYPES: dict[str, Any] = {"ready-timeout": float, "rollout-timeout": float}
FILE_KEYS: tuple[str, ...] = ("env", "env-file", *_SPEC_TYPES, *_ENTRY_TYPES)
_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int to Python, not to TOML
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)
_DECODE_AT_RE = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")


@dataclass(frozen=True)
class ServiceEntry:
    """One service of a file: its validated spec (env from ``env`` over env files,
    interpolated) and the waits `up` and `rollout` take as flags."""

    spec: ServiceSpec
    ready_timeout: float = options.DEFAULT_READY_TIMEOUT_S
    rollout_timeout: float = options.DEFAULT_ROLLOUT_TIMEOUT_S
    line: int = 1  # the [services.NAME] header's line, for messages

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class ProjectFile:
    path: Path
    services: dict[str, ServiceEntry]  # in the file's order

    def select(self, names: Sequence[str]) -> list[ServiceEntry]:
        """The named services in the order given (every service when none is named); an
        unknown name is a ConfigFileError naming the file and its services."""
        if not names:
            return list(self.services.values())
        unknown = [name for name in names if name not in self.services]
        if unknown:
            raise ConfigFileError(
                f"{self.path}: no service named {unknown[0]!r} "
                f"(its services: {', '.join(self.services)})",
                path=str(self.path),
            )
        return [self.services[name] for name in dict.fromkeys(names)]


def find(explicit: Path | None, cwd: Path | None = None) -> Path | None:
    """``explicit`` when given (it must exist), else ``reuseport.toml`` in ``cwd`` (the
    current directory, then returned relative) if there is one, else None."""
    if explicit is not None:
        if not explicit.is_file():
            reason = "is not a file" if explicit.exists() else "no such file"
            raise ConfigFileError(f"{explicit}: {reason}", path=str(explicit))
        return explicit
    candidate = cwd / DEFAULT_FILE if cwd is not None else Path(DEFAULT_FILE)
    return candidate if candidate.is_file() else None


def load(path: Path, environ: Mapping[str, str] | None = None) -> ProjectFile:
    """Read, interpolate (from ``environ``, default os.environ) and validate ``path``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigFileError(f"{path}: cannot read: {reason}", path=str(path)) from None
    loader = _Loader(path, text, os.environ if environ is None else environ)
    return ProjectFile(path, loader.services())


class _Loader:
    def __init__(self, path: Path, text: str, environ: Mapping[str, str]) -> None:
        self.path, self.environ = path, environ
        try:
            self.data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib says where only in its message: "... (at line 3, column 8)".
            at = _DECODE_AT_RE.match(str(exc))
            line = int(at["line"]) if at else 1
            what = f"{at['what']} at column {at['column']}" if at else str(exc)
            raise ConfigFileError(
                f"{path}:{line}: invalid TOML: {what}", path=str(path), line=line
            ) from None
        self.lines = KeyLines(text)

    def fail(self, key_path: KeyPath, detail: str) -> ConfigFileError:
        line = self.lines.line_of(key_path)
        dotted = ".".join(_show_key(part) for part in key_path)
        return ConfigFileError(
            f"{self.path}:{line}: {dotted}: {detail}", path=str(self.path), line=line, key=dotted
        )

    def services(self) -> dict[str, ServiceEntry]:
        for key in self.data:
            if key != "services":
                raise self.fail((key,), _unknown("key", key, ("services",)))
        tables = self.data.get("services")
        if tables is None:
            raise ConfigFileError(
                f"{self.path}:1: no [services] table: declare each service as [services.NAME]",
                path=str(self.path),
                line=1,
                key="services",
            )
        if not isinstance(tables, dict) or not tables:
            raise self.fail(("services",), "must hold one [services.NAME] table per service")
        entries = {name: self.entry(name, table) for name, table in tables.items()}
        self.check_ports(entries)
        return entries

    def entry(self, name: str, table: object) -> ServiceEntry:
        where = ("services", name)
        if not isinstance(table, dict):
            raise self.fail(where, f"must be a table ([services.{name}]), got {_type(table)}")
        try:
            validate_name(name)
        except InvalidSpec as exc:
            raise self.fail(where, exc.message) from None
        for key in table:
            if key not in FILE_KEYS:
                raise self.fail((*where, key), _unknown("key", key, FILE_KEYS))
        for key in _REQUIRED:
            if key not in table:
                raise self.fail((*where, key), f"missing: every service needs {key} = ...")
        values = {key: self.value(where, key, table[key]) for key in table}
        env = self.env_files(where, values.pop("env-file", []))
        env.update(values.pop("env", {}))
        waits = {key: values.pop(key) for key in _ENTRY_TYPES if key in values}
        try:
            spec = options.build_spec(
                name=name,
                env=tuple(sorted(env.items())),
                **{key.replace("-", "_"): value for key, value in values.items()},
            )
            for key, seconds in waits.items():
                options.positive_seconds(key, seconds)
        except InvalidSpec as exc:
            if exc.key in FILE_KEYS:
                raise self.fail((*where, str(exc.key)), exc.detail) from None
            raise self.fail(where, exc.message) from None
        return ServiceEntry(
            spec,
            ready_timeout=float(waits.get("ready-timeout", options.DEFAULT_READY_TIMEOUT_S)),
            rollout_timeout=float(waits.get("rollout-timeout", options.DEFAULT_ROLLOUT_TIMEOUT_S)),
            line=self.lines.line_of(where),
        )

    def value(self, where: KeyPath, key: str, raw: object) -> Any:
        """``raw`` interpolated and of the key's type (an int for a float key as a float)."""
        at = (*where, key)
        if key == "env":
            if not isinstance(raw, dict):
                raise self.fail(at, f"must be a table of strings, got {_type(raw, show=False)}")
            for var, value in raw.items():
                if not is_env_key(var):
                    raise self.fail((*at, var), "not a variable name: use [A-Za-z_][A-Za-z0-9_]*")
                if not isinstance(value, str):
                    raise self.fail((*at, var), f"must be a string, got {_type(value, show=False)}")
            return {var: self.interpolated((*at, var), value) for var, value in raw.items()}
        if key == "env-file":
            paths = [raw] if isinstance(raw, str) else raw
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise self.fail(at, f"must be a path or an array of paths, got {_type(raw)}")
            return [self.interpolated(at, p) for p in paths]
        hint = _SPEC_TYPES.get(key) or _ENTRY_TYPES[key]
        wanted = next(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
        if wanted is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if wanted in (int, float) and isinstance(raw, str) and "$" in raw:
            return self.number(at, wanted, raw)
        if type(raw) is not wanted:
            raise self.fail(at, f"must be {_name_of(wanted)}, got {_type(raw)}")
        return self.interpolated(at, raw) if isinstance(raw, str) else raw

    def number(self, at: KeyPath, wanted: type, raw: str) -> int | float:
        """A number key given as a string to interpolate (``port = "${PORT:-8080}"``, as
        Compose allows): the text it gives must read as the number."""
        text = self.interpolated(at, raw).strip()
        try:
            return int(text) if wanted is int else float(text)
        except ValueError:
            raise self.fail(at, f"must be {_name_of(wanted)}, got {text!r} from {raw!r}") from None

    def interpolated(self, at: KeyPath, text: str) -> str:
        try:
            return interpolate(text, self.environ)
        except InterpolationError as exc:
            raise self.fail(at, str(exc)) from None

    def env_files(self, where: KeyPath, paths: list[str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for name in paths:
            try:
                env.update(read_env_file(self.path.parent / name))
            except EnvFileError as exc:
                raise self.fail((*where, "env-file"), str(exc)) from None
        return env

    def check_ports(self, entries: dict[str, ServiceEntry]) -> None:
        owners: dict[int, str] = {}
        for name, entry in entries.items():
            other = owners.setdefault(entry.spec.port, name)
            if other != name:
                raise self.fail(
                    ("services", name, "port"),
                    f"{entry.spec.port} is also services.{other}'s port: one port per service",
                )


def effective(entry: ServiceEntry, reveal: bool = False) -> dict[str, object]:
    """Every key of ``entry`` as a file would set it, defaults included (None: unset), the
    env merged from env files; env values redacted (``redact_value``) unless ``reveal``."""
    values = options.spec_options(entry.spec)
    env = dict(entry.spec.env)
    values["env"] = env if reveal else {key: redact_value(value) for key, value in env.items()}
    values["ready-timeout"] = entry.ready_timeout
    values["rollout-timeout"] = entry.rollout_timeout
    return values


def to_json(project: ProjectFile, reveal: bool = False) -> dict[str, Any]:
    """The effective configuration: ``{"services": {name: {key: value}}}``."""
    return {"services": {name: effective(e, reveal) for name, e in project.services.items()}}


def to_toml(project: ProjectFile, reveal: bool = False) -> str:
    """The effective configuration as a project file that loads to the same specs (``$``
    written as ``$$``; unset keys left out, TOML has no null)."""
    import tomli_w  # only `reuseport config` writes TOML

    # Unset keys are left out (TOML has no null), and so is an empty env (an empty table).
    services = {
        name: {
            key: escaped(value)
            for key, value in effective(e, reveal).items()
            if value not in (None, {})
        }
        for name, e in project.services.items()
    }
    shown = "env values as written" if reveal else "env values redacted; --reveal shows them"
    header = f"# effective configuration of {project.path} ({shown})\n"
    return header + tomli_w.dumps({"services": services})


def escaped(value: object) -> object:
    """``value`` as a file must hold it to load back as ``value``: every string's ``$``
    doubled (a file's strings are interpolated), in tables too."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {key: escaped(item) for key, item in value.items()}
    return value


def _unknown(what: str, key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
    return f"unknown {what}{hint}"


def _type(value: object, show: bool = True) -> str:
    """The TOML type of ``value``, with the value when ``show`` (never for env values)."""
    for kind, name in _TOML_TYPES:
        if isinstance(value, kind):
            scalar = isinstance(value, bool | int | float | str)
            shown = f" {value!r}" if show and scalar else ""
            return name.split(" ", 1)[1] + shown
    return type(value).__name__


def _name_of(kind: type) -> str:
    return next((name for k, name in _TOML_TYPES if k is kind), kind.__name__)


def _show_key(part: str) -> str:
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
