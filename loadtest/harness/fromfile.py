"""The benchmark's tool setups from a project file: ``loadtest/run --file reuseport.toml``.

The user's service, as their file declares it (image, replica count, env, user, CPU limit,
health check, hang window...), is what the bench starts, through the same ``up -f`` they
run; the proxies' backends are plain containers of the same image with the same env. Only
what several setups of one run cannot share is changed in each setup's copy of the
file: the service's name (the bench's, so cleanup finds it), its port (a free one), its
balance (each setup's), no metrics port and, with an HTTP health check, a free block of
health ports.

The copy holds the env in clear (the replicas need it): it is written 0600 in the
bench's own 0700 work directory and removed with it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import tomli_w

from loadtest.harness.errors import SetupError
from reuseport import projectfile
from reuseport.errors import ConfigFileError
from reuseport.projectfile import ServiceEntry

# The up flags a bench passes, as file keys with their type (see _overrides).
_FLAG_TYPES: dict[str, type] = {"balance": str, "backoff-reset": float, "cpus": float}


def load_service(path: Path, name: str | None) -> ServiceEntry:
    """The service ``name`` of the file at ``path`` (its only service when None)."""
    try:
        project = projectfile.load(projectfile.find(path) or path)
        if name is not None:
            (entry,) = project.select([name])
            return entry
    except ConfigFileError as exc:
        raise SetupError(str(exc)) from None
    if len(project.services) != 1:
        raise SetupError(
            f"{path}: {len(project.services)} services ({', '.join(project.services)}); "
            "name the one to measure with --service"
        )
    return next(iter(project.services.values()))


def setup_file(
    entry: ServiceEntry,
    service: str,
    port: int,
    flags: Sequence[str],
    ready_timeout_s: float,
    health_port_base: int | None,
    directory: Path,
) -> Path:
    """A project file of one service, ``service``: ``entry`` with the bench's changes (see
    the module doc) and ``flags`` (``--key value`` pairs of `up`) as keys; its path."""
    values = {
        key: value
        for key, value in projectfile.effective(entry, reveal=True).items()
        if value not in (None, {})
    }
    values.pop("metrics-port", None)
    values["port"] = port
    values["ready-timeout"] = ready_timeout_s
    if "health-port-base" in values:
        if health_port_base is None:
            raise SetupError("the file's service has health-port-base: a block of ports needed")
        values["health-port-base"] = health_port_base
    values.update(_overrides(flags))
    path = directory / f"{service}.toml"
    # Created 0600 before a byte is written: the env values are in it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(tomli_w.dumps({"services": {service: projectfile.escaped(values)}}))
    return path


def _overrides(flags: Sequence[str]) -> dict[str, object]:
    if len(flags) % 2:
        raise ValueError(f"flags come as --key value pairs: {list(flags)}")
    found: dict[str, object] = {}
    for flag, raw in zip(flags[::2], flags[1::2], strict=True):
        key = flag.removeprefix("--")
        kind = _FLAG_TYPES.get(key)
        if kind is None:
            raise ValueError(f"{flag}: not a flag the bench knows as a file key")
        found[key] = kind(raw)
    return found
