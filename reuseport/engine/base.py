"""The engine interface and the engine-neutral records it returns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from reuseport.spec import ServiceSpec


@dataclass(frozen=True)
class Replica:
    """One replica container as the engine last saw it (a wrapper over inspect data)."""

    id: str
    name: str
    service: str
    index: int
    state: str  # created | running | paused | restarting | removing | exited | dead
    pid: int  # host pid of the container's init process, 0 when not running
    image: str  # the reference the user gave
    spec_hash: str
    spec_json: str
    restarts: int
    started_at: float | None  # epoch seconds
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    health_port: int | None = None  # its own HEALTH_PORT, when the spec asks for one

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state == "running" and self.pid > 0

    def exit_reason(self) -> str:
        if self.oom_killed:
            return "killed by the OOM killer"
        if self.error:
            return self.error
        if self.exit_code is None:
            return f"container {self.state}"
        if self.exit_code > 128:
            return f"exited with code {self.exit_code} (signal {self.exit_code - 128})"
        return f"exited with code {self.exit_code}"


@dataclass(frozen=True)
class SupervisorInfo:
    id: str
    service: str
    state: str
    spec_hash: str

    @property
    def running(self) -> bool:
        # "created" is not running: a supervisor container created but never started
        # supervises nothing; under the lease, `up` removes it as stale.
        return self.state in ("running", "restarting")


class EventStream(Protocol):
    """Iterable of wake-ups about one service; ``close()`` ends it from another thread."""

    def __iter__(self) -> Iterator[dict]: ...

    def close(self) -> None: ...


class Engine(Protocol):
    def ping(self) -> None: ...

    def require_image(self, ref: str) -> None: ...

    def image_user(self, ref: str) -> str: ...

    def resolve_user(self, ref: str, user: str) -> int | None: ...

    def replicas(self, service: str | None = None) -> list[Replica]: ...

    def create_replica(
        self, spec: ServiceSpec, index: int, restarts: int, health_port: int | None = None
    ) -> str: ...

    def exec_check(self, container_id: str, command: str, timeout: float) -> int: ...

    def stop_replica(self, container_id: str, timeout: float) -> None: ...

    def remove_replica(self, container_id: str) -> None: ...

    def unpause_replica(self, container_id: str) -> None: ...

    def logs(
        self, container_id: str, *, follow: bool, tail: int | str, timestamps: bool
    ) -> Iterator[bytes]: ...

    def last_log_lines(self, container_id: str, lines: int) -> list[str]: ...

    def events(self, service: str) -> EventStream: ...

    def supervisors(self, service: str | None = None) -> list[SupervisorInfo]: ...

    def start_supervisor(self, spec: ServiceSpec, image: str, state_dir: str) -> str: ...

    def remove_supervisor(self, container_id: str, timeout: float) -> None: ...

    def version(self) -> dict[str, str]: ...
