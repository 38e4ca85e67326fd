"""Desired state and supervisor status, one small JSON file each per service.

Containers (found by label) are the source of truth for what runs; these files hold what
no container can: the desired replica count (``scale`` changes it while replicas keep
running) and the supervisor's memory (backoff, restarts, last error) for ``ps``.

The files hold the service's environment, secrets included, so they are private: 0600 in
a 0700 directory. A write is a temp file + rename, so a reader never sees half a file; the
file and the directory are fsynced so a power cut does not either (all but the status file:
a cache the supervisor rewrites every few seconds). Every file carries ``schema_version``;
a file without one is version 1 (written before versions existed), a newer one is refused.
A spec that cannot be read raises :class:`StateUnreadable`, never None: None means only
"no such file", which a supervisor takes as "the service was removed".

Two kinds of ``flock`` guard a service (the kernel drops both when their holder dies, and
both work across the bind mount into a supervisor container: it is the same inode):

- ``NAME.lease``: held for its whole life by the one supervisor of the service, with a
  line saying who it is (``acquire_lease``, ``lease_owner``).
- ``NAME.lock``: held for a moment by each writer of the spec (``update_spec``,
  ``save_spec``, ``forget``), so concurrent read-modify-writes never lose a change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reuseport.errors import (
    InvalidSpec,
    ReuseportError,
    ServiceNotFound,
    StateUnreadable,
    SupervisorConflict,
)
from reuseport.spec import ServiceSpec

DEFAULT_STATE_DIR = "/var/lib/reuseport"
SCHEMA_VERSION = 1
VERSION_KEY = "schema_version"
FILE_MODE = 0o600
DIR_MODE = 0o700
# lease_owner() probes a lease by locking it for a moment; an acquire that meets such a
# probe retries for this long before it calls the lease held.
PROBE_GRACE_S = 0.2

log = logging.getLogger(__name__)
# Leases this process holds, by file path: forget() may remove those files (see there).
_held_here: dict[str, Lease] = {}


def default_state_dir() -> Path:
    return Path(os.environ.get("REUSEPORT_STATE_DIR", DEFAULT_STATE_DIR))


class Lease:
    """The exclusive right to supervise one service, held until ``release()`` or until the
    holding process dies (the kernel drops the lock with the fd)."""

    def __init__(self, path: Path, fd: int, owner: str) -> None:
        self.path = path
        self.owner = owner
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lease up (idempotent). The file stays: unlinking it here could let two
        later acquirers lock two different inodes."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if _held_here.get(str(self.path)) is self:
                del _held_here[str(self.path)]
            os.close(fd)  # closing the only fd of the open file drops the flock

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class StateStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_state_dir()
        self._root_ready = False
        self._warned: set[str] = set()

    def _path(self, name: str, kind: str) -> Path:
        return self.root / f"{name}.{kind}.json"

    def _guard_path(self, name: str, kind: str) -> Path:
        return self.root / f"{name}.{kind}"

    def spec_mtime(self, name: str) -> float | None:
        """When the desired spec last changed (None: there is none); a cheap change check."""
        try:
            return self._path(name, "spec").stat().st_mtime
        except FileNotFoundError:
            return None

    # -- the desired spec ----------------------------------------------------------------

    def save_spec(self, spec: ServiceSpec) -> None:
        with self._spec_lock(spec.name):
            self._save_spec(spec)

    def load_spec(self, name: str) -> ServiceSpec | None:
        """The stored spec; None only when there is no spec file (the service is gone).
        Raises StateUnreadable when the file exists but cannot be trusted."""
        path = self._path(name, "spec")
        data = self._read(path)
        if data is None:
            return None
        try:
            return ServiceSpec.from_json(json.dumps(data))
        except InvalidSpec as exc:
            raise StateUnreadable(f"state file {path} is unreadable: {exc}") from exc

    def update_spec(self, name: str, change: Callable[[ServiceSpec], ServiceSpec]) -> ServiceSpec:
        """Read, change and write the spec under NAME.lock, so concurrent writers (a scale
        during a rollout) each see the other's change. Returns what was written."""
        with self._spec_lock(name):
            current = self.load_spec(name)
            if current is None:
                raise ServiceNotFound(f"no service named {name!r} is up (see `reuseport ps`)")
            changed = change(current)
            self._save_spec(changed)
            return changed

    def _save_spec(self, spec: ServiceSpec) -> None:
        self._write(self._path(spec.name, "spec"), json.loads(spec.to_json()))

    # -- supervisor status and rollout history -------------------------------------------

    def save_status(self, name: str, status: dict[str, Any]) -> None:
        # Not fsynced: the status is a cache the next pass rewrites, and a heartbeat that a
        # power cut loses costs nothing; the fsyncs were a third of an idle supervisor's CPU.
        self._write(self._path(name, "status"), status, durable=False)

    def load_status(self, name: str) -> dict[str, Any]:
        """The supervisor's last status; {} when there is none or it cannot be read (the
        supervisor rewrites it every pass; the reason is logged, not guessed around)."""
        try:
            return self._read(self._path(name, "status")) or {}
        except StateUnreadable as exc:
            if str(exc) not in self._warned:  # `top` reads it every second: say it once
                self._warned.add(str(exc))
                log.warning("%s; reading it as empty", exc)
            return {}

    def load_history(self, name: str) -> list[dict[str, Any]]:
        """Rollout revisions, oldest first; [] when there is no history file. An unreadable
        one raises StateUnreadable: an empty list would silently lose every revision."""
        path = self._path(name, "history")
        data = self._read(path)
        if data is None:
            return []
        revisions = data.get("revisions", [])
        if not isinstance(revisions, list):
            raise StateUnreadable(f"state file {path} is unreadable: 'revisions' is not a list")
        return list(revisions)

    def save_history(self, name: str, revisions: list[dict[str, Any]]) -> None:
        self._write(self._path(name, "history"), {"revisions": revisions})

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name.removesuffix(".spec.json") for p in self.root.glob("*.spec.json"))

    def forget(self, name: str) -> None:
        """Remove every file of the service. The spec goes under NAME.lock (a writer that
        read it before cannot bring it back). NAME.lease is removed when it is free or held
        by this process (which is removing its own service); a lease another process holds
        stays, so the next acquirer still meets the holder's lock on the same inode. Either
        way a holder never notices: its lock lives on its fd, not on the name."""
        with self._spec_lock(name):
            for kind in ("spec", "status", "history", "steering"):
                self._path(name, kind).unlink(missing_ok=True)
            self._guard_path(name, "lock").unlink(missing_ok=True)  # held by us: safe
        lease_path = self._guard_path(name, "lease")
        if str(lease_path) in _held_here:
            lease_path.unlink(missing_ok=True)
            return
        with contextlib.suppress(OSError):
            fd = _open_locked(lease_path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=False)
            lease_path.unlink(missing_ok=True)
            os.close(fd)

    def save_steering(self, name: str, handle: dict[str, Any]) -> None:
        """The ids of the steering program and maps a supervisor attached (a later one
        adopts them: see reuseport.kernel.steer)."""
        self._write(self._path(name, "steering"), {"handle": handle})

    def load_steering(self, name: str) -> dict[str, Any] | None:
        try:
            data = self._read(self._path(name, "steering"))
        except StateUnreadable as exc:
            log.warning("%s; steering starts afresh", exc)
            return None
        handle = (data or {}).get("handle")
        return handle if isinstance(handle, dict) else None

    def forget_status(self, name: str) -> None:
        self._path(name, "status").unlink(missing_ok=True)

    # -- one supervisor per service ------------------------------------------------------

    def acquire_lease(self, name: str, owner: str) -> Lease:
        """Take NAME.lease without waiting and write ``owner`` (e.g. "foreground pid 123")
        into it. Raises SupervisorConflict naming the holder when another process has it."""
        self._ensure_root()
        path = self._guard_path(name, "lease")
        deadline = time.monotonic() + PROBE_GRACE_S
        while True:
            try:
                fd = _open_locked(path, fcntl.LOCK_EX | fcntl.LOCK_NB, create=True)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_owner(path) or "another process"
                    raise SupervisorConflict(
                        f"{name!r} is already supervised by {holder}; use `reuseport "
                        f"ps|scale|logs|down {name}`"
                    ) from None
                time.sleep(0.01)
            except OSError as exc:
                raise ReuseportError(f"cannot lock {path}: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{owner}\n".encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise ReuseportError(f"cannot write {path}: {exc.strerror}") from exc
        lease = _held_here[str(path)] = Lease(path, fd, owner)
        return lease

    def lease_owner(self, name: str) -> str | None:
        """Who holds the service's lease, or None when nobody does. Probes with a shared
        lock held for a moment (acquire_lease waits such a probe out)."""
        path = self._guard_path(name, "lease")
        try:
            fd = _open_locked(path, fcntl.LOCK_SH | fcntl.LOCK_NB, create=False)
        except BlockingIOError:
            return _read_owner(path) or "another process"
        except FileNotFoundError:
            return None  # no lease file: never held, or forgotten
        except OSError as exc:
            raise ReuseportError(f"cannot probe {path}: {exc.strerror}") from exc
        os.close(fd)
        return None

    # -- files ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _spec_lock(self, name: str) -> Iterator[None]:
        """NAME.lock held (blocking) for the body."""
        self._ensure_root()
        path = self._guard_path(name, "lock")
        try:
            fd = _open_locked(path, fcntl.LOCK_EX, create=True)
        except OSError as exc:
            raise ReuseportError(f"cannot lock {path}: {exc.strerror}") from exc
        try:
            yield
        finally:
            os.close(fd)

    def _ensure_root(self) -> None:
        """Create the directory 0700, or tighten an existing one (older versions made it
        world-readable), once per store."""
        if self._root_ready:
            return
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if stat.S_IMODE(self.root.stat().st_mode) != DIR_MODE:
                os.chmod(self.root, DIR_MODE)
        except OSError as exc:
            raise ReuseportError(
                f"cannot prepare the state directory {self.root}: {exc.strerror}"
            ) from exc
        self._root_ready = True

    def _write(self, path: Path, data: dict[str, Any], durable: bool = True) -> None:
        self._ensure_root()
        tmp = ""
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            os.fchmod(fd, FILE_MODE)  # it holds the service's environment, secrets included
            with os.fdopen(fd, "w") as handle:
                # dumps, not dump: dump streams through the pure-Python encoder, several
                # times slower (the status file is rewritten every second).
                handle.write(json.dumps({**data, VERSION_KEY: SCHEMA_VERSION}, sort_keys=True))
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
            tmp = ""
            if durable:
                _fsync_dir(path.parent)
        except OSError as exc:
            raise ReuseportError(f"cannot write state file {path}: {exc.strerror}") from exc
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        """The file's content without its version key; None only if there is no file."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateUnreadable(f"state file {path} is unreadable: {exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            what = "empty" if not text.strip() else f"corrupt or truncated JSON ({exc})"
            raise StateUnreadable(f"state file {path} is unreadable: {what}") from exc
        if not isinstance(data, dict):
            raise StateUnreadable(
                f"state file {path} is unreadable: a JSON {type(data).__name__}, not an object"
            )
        version = data.pop(VERSION_KEY, 1)
        if not isinstance(version, int) or version < 1:
            raise StateUnreadable(f"state file {path} has an invalid schema version {version!r}")
        if version > SCHEMA_VERSION:
            raise StateUnreadable(
                f"state file {path} has schema version {version}, newer than this reuseport "
                f"reads ({SCHEMA_VERSION}): upgrade reuseport"
            )
        return data


def _open_locked(path: Path, operation: int, *, create: bool) -> int:
    """An fd of ``path`` with ``flock(operation)`` taken on the inode the name still points
    to (a concurrent forget may unlink the file between our open and our lock)."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    while True:
        fd = os.open(path, flags, FILE_MODE)
        try:
            fcntl.flock(fd, operation)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            if not create:
                os.close(fd)
                raise
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the name moved on to another inode: lock that one instead


def _read_owner(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
