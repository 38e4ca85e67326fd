"""One row per replica, built the same way for `ps`, `ps --json` and the live table."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from reuseport.engine.base import Replica
from reuseport.kernel.attribution import ForeignListener, PortObservation


@dataclass(frozen=True)
class ReplicaRow:
    service: str
    replica: int
    container_id: str | None
    state: str
    listening: bool
    pid: int | None
    restarts: int
    uptime_s: float | None
    image: str
    retry_in_s: float | None = None
    last_error: str = ""
    # From the kernel (None when the port was not read): accepted connections it holds,
    # connections waiting in its accept queue / the queue's limit, its share of the
    # service's connections.
    connections: int | None = None
    accept_queue: int | None = None
    backlog: int | None = None
    share: float | None = None
    failing: str = ""  # why it is being replaced while still running
    awaiting_health: bool = False  # listening, its first health check not passed yet

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServiceView:
    name: str
    port: int | None
    desired: int | None
    rows: tuple[ReplicaRow, ...]
    supervisor: str  # human description: "detached (container abc)", "foreground (pid 12)", "none"
    foreign: tuple[ForeignListener, ...] = ()  # listeners on the port that are not ours
    replacements: Mapping[str, int] | None = None  # replacements by reason kind

    @property
    def ready(self) -> int:
        return sum(
            1 for row in self.rows if row.listening and not row.failing and not row.awaiting_health
        )

    @property
    def connections(self) -> int:
        return sum(row.connections or 0 for row in self.rows)


def replica_rows(
    service: str,
    image: str,
    replicas: Sequence[Replica],
    listening: Mapping[str, int],
    slots: Mapping[str, Mapping[str, Any]],
    desired: int | None,
    now: float,
    port: PortObservation | None = None,
    failing: Mapping[str, str] | None = None,
    awaiting_health: Collection[str] = (),
) -> list[ReplicaRow]:
    """Rows for running/dead containers plus one for each wanted index that has none
    (in backoff, or not created yet)."""
    rows = []
    for replica in replicas:
        slot = slots.get(str(replica.index), {})
        sockets = port.replicas.get(replica.id) if port else None
        counted = port is not None and port.with_connections and replica.running
        rows.append(
            ReplicaRow(
                service=service,
                replica=replica.index,
                container_id=replica.short_id,
                state=replica.state,
                listening=replica.id in listening,
                pid=listening.get(replica.id) or (replica.pid or None),
                restarts=max(replica.restarts, int(slot.get("restarts", 0))),
                uptime_s=round(now - replica.started_at, 1)
                if replica.running and replica.started_at
                else None,
                image=replica.image,
                last_error=str(slot.get("last_error") or ""),
                connections=(len(sockets.connections) if sockets else 0) if counted else None,
                accept_queue=(sockets.accept_queue if sockets else 0) if counted else None,
                backlog=sockets.backlog if sockets and counted else None,
                share=(port.share(replica.id) or 0.0) if port and counted else None,
                failing=(failing or {}).get(replica.id, ""),
                awaiting_health=replica.id in awaiting_health,
            )
        )
    present = {r.index for r in replicas if r.running}
    for index in range(1, (desired or 0) + 1):
        if index in present:
            continue
        slot = slots.get(str(index), {})
        retry_at = slot.get("retry_at")
        rows.append(
            ReplicaRow(
                service=service,
                replica=index,
                container_id=None,
                state="backoff" if retry_at else "pending",
                listening=False,
                pid=None,
                restarts=int(slot.get("restarts", 0)),
                uptime_s=None,
                image=image,
                retry_in_s=round(max(0.0, retry_at - now), 1) if retry_at else None,
                last_error=str(slot.get("last_error") or ""),
            )
        )
    return sorted(rows, key=lambda row: (row.replica, row.state != "running"))


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
