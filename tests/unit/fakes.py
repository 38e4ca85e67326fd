"""An in-memory engine and clock for replaying supervisor histories without Docker."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from reuseport.engine.base import Replica, SupervisorInfo
from reuseport.kernel.attribution import PortObservation, ReplicaSockets
from reuseport.spec import ServiceSpec


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeEngine:
    """Containers start running at once; the fake probe says which listen."""

    containers: dict[str, Replica] = field(default_factory=dict)
    log_lines: dict[str, list[str]] = field(default_factory=dict)
    created: list[tuple[int, float]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    unpaused: list[str] = field(default_factory=list)
    clock: FakeClock = field(default_factory=FakeClock)
    crash_on_start: bool = False  # every new container dies before listening
    crash_log: str = "Traceback: boom"
    exec_codes: dict[str, int] = field(default_factory=dict)  # health-cmd exit codes
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def ping(self) -> None: ...

    def version(self) -> dict[str, str]:
        return {"version": "fake", "api_version": "1.41", "address": "fake"}

    def require_image(self, ref: str) -> None: ...

    def image_user(self, ref: str) -> str:
        return ""

    def resolve_user(self, ref: str, user: str) -> int | None:
        return 0

    def replicas(self, service: str | None = None) -> list[Replica]:
        return [r for r in self.containers.values() if service in (None, r.service)]

    def create_replica(
        self, spec: ServiceSpec, index: int, restarts: int, health_port: int | None = None
    ) -> str:
        number = next(self._ids)
        cid = f"{number:064x}"
        self.created.append((index, self.clock()))
        replica = Replica(
            id=cid,
            name=f"{spec.name}.{index}",
            service=spec.name,
            index=index,
            state="running",
            pid=10_000 + number,
            image=spec.image,
            spec_hash=spec.spec_hash(),
            spec_json=spec.redacted().to_json(),
            restarts=restarts,
            started_at=self.clock(),
            health_port=health_port,
        )
        self.containers[cid] = replica
        if self.crash_on_start:
            self.kill(cid, code=1)
            self.log_lines[cid] = [self.crash_log]
        return cid

    def exec_check(self, container_id: str, command: str, timeout: float) -> int:
        return self.exec_codes.get(container_id, 0)

    def kill(self, cid: str, code: int = 137) -> None:
        self.containers[cid] = replace(self.containers[cid], state="exited", pid=0, exit_code=code)

    def stop_replica(self, container_id: str, timeout: float) -> None:
        self.stopped.append(container_id)
        self.containers.pop(container_id, None)

    def remove_replica(self, container_id: str) -> None:
        self.removed.append(container_id)
        self.containers.pop(container_id, None)

    def pause(self, cid: str) -> None:
        self.containers[cid] = replace(self.containers[cid], state="paused")

    def unpause_replica(self, container_id: str) -> None:
        self.unpaused.append(container_id)
        replica = self.containers.get(container_id)
        if replica is not None and replica.state == "paused":
            self.containers[container_id] = replace(replica, state="running")

    def logs(self, container_id: str, *, follow: bool, tail: int | str, timestamps: bool):  # noqa: ANN201
        return iter(())

    def last_log_lines(self, container_id: str, lines: int) -> list[str]:
        return self.log_lines.get(container_id, [])[-lines:]

    def events(self, service: str):  # noqa: ANN201
        return iter(())

    def supervisors(self, service: str | None = None) -> list[SupervisorInfo]:
        return []

    def start_supervisor(self, spec: ServiceSpec, image: str, state_dir: str) -> str:
        return "supervisor"

    def remove_supervisor(self, container_id: str, timeout: float) -> None: ...

    def running(self) -> list[Replica]:
        return [r for r in self.containers.values() if r.running]


def listening_probe(engine: FakeEngine, delay: float = 0.0, queues: dict[str, int] | None = None):  # noqa: ANN201
    """Readiness: a running container listens ``delay`` seconds after it started.
    ``queues``: container id -> its accept-queue depth (it never accepts anything)."""

    def probe(port: int, replicas: list[Replica], **_: object) -> PortObservation:
        now = engine.clock()
        found = {
            r.id: ReplicaSockets(
                r.pid,
                (r.pid,),
                (queues or {}).get(r.id, 0),
                128,
                frozenset(),
                ((r.pid, r.pid),),  # its listener's inode is its pid, here
            )
            for r in replicas
            if r.running and r.id in engine.containers and now - (r.started_at or 0) >= delay
        }
        return PortObservation(port, found, (), True)

    return probe


def reconcile_for(supervisor: Any, engine: FakeEngine, seconds: float, step: float = 0.5) -> None:
    """Reconcile passes over ``seconds`` of fake time, each re-listing (as a resync does)."""
    end = engine.clock() + seconds
    while engine.clock() < end:
        supervisor.stale = True
        supervisor.reconcile()
        engine.clock.advance(step)


class InlineExecutor:
    """Runs health checks at once, in the caller's thread (scripted histories)."""

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the check's failure is the result
            future.set_exception(exc)
        return future

    def shutdown(self, **_: Any) -> None: ...


@dataclass
class FakeSyncResult:
    members: frozenset[int]
    admitted: tuple[int, ...] = ()
    evicted: tuple[int, ...] = ()
    failed: dict[int, str] = field(default_factory=dict)


@dataclass
class FakeSteerer:
    """The steering map as a set; every sync and its order against the engine's stops."""

    policy: str
    engine: FakeEngine | None = None
    map: set[int] = field(default_factory=set)
    syncs: list[frozenset[int]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # shared with the engine's stops
    closed: str = ""

    def handle(self) -> dict:
        return {"policy": self.policy}

    def sync(self, wanted: Mapping[int, int]) -> FakeSyncResult:
        self.syncs.append(frozenset(wanted))
        evicted = tuple(sorted(self.map - set(wanted)))
        self.map = set(wanted)
        self.log.extend(f"evict {inode}" for inode in evicted)
        return FakeSyncResult(frozenset(self.map), evicted=evicted)

    def members(self) -> frozenset[int]:
        return frozenset(self.map)

    def set_loads(self, loads: Mapping[int, int]) -> None: ...

    def close(self) -> None:
        self.closed = "closed"

    def detach(self) -> None:
        self.map.clear()
        self.closed = "detached"
