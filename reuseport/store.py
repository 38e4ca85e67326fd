"""Desired state and supervisor status, one small JSON file each per service.

Containers (found by label) are the source of truth for what runs; these files hold what
no container can: the desired replica count (``scale`` changes it while replicas keep
running) and the supervisor's memory (backoff, restarts, last error) for ``ps``.
Writes are atomic (temp file + rename) so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from reuseport.errors import InvalidSpec, ReuseportError
from reuseport.spec import ServiceSpec

DEFAULT_STATE_DIR = "/var/lib/reuseport"


def default_state_dir() -> Path:
    return Path(os.environ.get("REUSEPORT_STATE_DIR", DEFAULT_STATE_DIR))


class StateStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_state_dir()

    def _path(self, name: str, kind: str) -> Path:
        return self.root / f"{name}.{kind}.json"

    def spec_mtime(self, name: str) -> float | None:
        """When the desired spec last changed (None: there is none); a cheap change check."""
        try:
            return self._path(name, "spec").stat().st_mtime
        except FileNotFoundError:
            return None

    def save_spec(self, spec: ServiceSpec) -> None:
        self._write(self._path(spec.name, "spec"), json.loads(spec.to_json()))

    def load_spec(self, name: str) -> ServiceSpec | None:
        data = self._read(self._path(name, "spec"))
        if data is None:
            return None
        try:
            return ServiceSpec.from_json(json.dumps(data))
        except InvalidSpec as exc:
            raise ReuseportError(
                f"state file {self._path(name, 'spec')} is corrupt: {exc}"
            ) from exc

    def save_status(self, name: str, status: dict[str, Any]) -> None:
        self._write(self._path(name, "status"), status)

    def load_status(self, name: str) -> dict[str, Any]:
        return self._read(self._path(name, "status")) or {}

    def load_history(self, name: str) -> list[dict[str, Any]]:
        return list((self._read(self._path(name, "history")) or {}).get("revisions", []))

    def save_history(self, name: str, revisions: list[dict[str, Any]]) -> None:
        self._write(self._path(name, "history"), {"revisions": revisions})

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name.removesuffix(".spec.json") for p in self.root.glob("*.spec.json"))

    def forget(self, name: str) -> None:
        for kind in ("spec", "status", "history"):
            self._path(name, kind).unlink(missing_ok=True)

    def forget_status(self, name: str) -> None:
        self._path(name, "status").unlink(missing_ok=True)

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            os.fchmod(fd, 0o644)  # readable by `ps` like `docker ps` output; nothing secret
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, sort_keys=True)
            os.replace(tmp, path)
        except OSError as exc:
            raise ReuseportError(f"cannot write state file {path}: {exc.strerror}") from exc

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
