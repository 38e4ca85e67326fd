"""What the supervisor concluded in one pass: one typed record per replica, one per service.

The supervisor publishes a :class:`ServiceStatus` after every pass (in memory for the live
table and ``/metrics``, in the status file for ``ps``, ``top``, ``scale`` and ``rollout``).
Nobody downstream re-derives readiness: :attr:`ReplicaStatus.ready` is the judge's verdict
(see :func:`reuseport.judge.is_ready`). Times are wall-clock epoch seconds so a status read
from the file by another process means the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from reuseport.kernel.attribution import ForeignListener

STATUS_VERSION = 1
# A supervisor rewrites its status at least every second; older than this it is not running.
STALE_AFTER_S = 5.0


@dataclass(frozen=True)
class Sockets:
    """A running replica's sockets on the port, from the supervisor's last full read."""

    connections: int
    accept_queue: int
    backlog: int
    share: float


@dataclass(frozen=True)
class ReplicaStatus:
    """One container of the service, or one wanted index that has none (``container_id``
    None: pending, or in backoff until ``retry_at``)."""

    index: int
    container_id: str | None
    state: str  # the engine's state, or "pending" / "backoff" for an empty index
    verdict: str  # see reuseport.judge: ready, starting, awaiting-health, failing, ...
    ready: bool
    listening: bool
    pid: int | None
    image: str
    spec_hash: str = ""
    started_at: float | None = None
    ready_since: float | None = None  # when it was first seen ready
    restarts: int = 0
    retry_at: float | None = None
    last_error: str = ""
    why: str = ""  # why it is being replaced while it still runs ("" when it is not)
    sockets: Sockets | None = None
    # Steering: in the map (takes new connections) or not and why; None when not steered.
    member: bool | None = None
    out_why: str = ""
    # How its app-level check last failed while it has not passed one yet (awaiting-health).
    check_error: str = ""

    @property
    def short_id(self) -> str | None:
        return self.container_id[:12] if self.container_id else None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def failing(self) -> bool:
        return bool(self.why)

    @property
    def awaiting_health(self) -> bool:
        return self.verdict == "awaiting-health"


@dataclass(frozen=True)
class IndexStatus:
    """What survives a replica index's containers: its restarts and crash-loop backoff."""

    restarts: int = 0
    failures: int = 0
    retry_at: float | None = None  # epoch; None when it is not backing off
    last_error: str = ""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    port: int | None
    image: str
    desired: int | None
    spec_hash: str
    at: float  # when the pass ended (epoch)
    replicas: tuple[ReplicaStatus, ...] = ()
    indices: Mapping[int, IndexStatus] = field(default_factory=dict)
    replacements: Mapping[str, int] = field(default_factory=dict)
    foreign: tuple[ForeignListener, ...] = ()
    mode: str = ""  # "foreground" | "detached" | "" (observed without a supervisor)
    supervisor: str = ""  # who published it: "foreground (pid 12)", "detached (...)", "none"
    pid: int | None = None  # the publishing supervisor's pid, in ...
    pid_namespace: int | None = None  # ... this pid namespace (inode of /proc/PID/ns/pid)
    problem: str = ""  # something the user must fix (e.g. an unreadable spec file)
    counted: bool = False  # the sockets figures include established connections
    balance: str = ""  # how new connections are spread now: round-robin, least-conn, hash
    balance_note: str = ""  # why it is not what the spec asks (steering unavailable here)

    @property
    def ready(self) -> int:
        return sum(1 for r in self.replicas if r.ready)

    @property
    def running(self) -> int:
        return sum(1 for r in self.replicas if r.running)

    @property
    def connections(self) -> int:
        return sum(r.sockets.connections for r in self.replicas if r.sockets)

    def converged(self) -> bool:
        """Every wanted replica runs the current template and is ready; nothing else runs."""
        live = [r for r in self.replicas if r.running]
        return (
            self.desired is not None
            and len(live) == self.desired
            and all(r.ready and r.spec_hash == self.spec_hash for r in live)
        )

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)

    def with_supervisor(self, text: str) -> ServiceStatus:
        return replace(self, supervisor=text)

    # -- the status file ----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        # What asdict gives, built by hand: asdict deep-copies every value, several ms a
        # write at 128 replicas. Every field here is a plain value or one of these records.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["replicas"] = tuple(
            {**vars(r), "sockets": dict(vars(r.sockets)) if r.sockets else None}
            for r in self.replicas
        )
        data["foreign"] = tuple(dict(vars(f)) for f in self.foreign)
        data["version"] = STATUS_VERSION
        data["indices"] = {str(i): asdict(s) for i, s in self.indices.items()}
        data["replacements"] = dict(self.replacements)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceStatus | None:
        """None for a file of another version or shape (an older supervisor wrote it)."""
        if data.get("version") != STATUS_VERSION:
            return None
        try:
            replicas = tuple(
                ReplicaStatus(
                    **{
                        **_known(ReplicaStatus, row),
                        "sockets": Sockets(**row["sockets"]) if row.get("sockets") else None,
                    }
                )
                for row in data.get("replicas", ())
            )
            return cls(
                **{
                    **_known(cls, data),
                    "replicas": replicas,
                    "indices": {
                        int(i): IndexStatus(**_known(IndexStatus, s))
                        for i, s in data.get("indices", {}).items()
                    },
                    "foreign": tuple(
                        ForeignListener(**_known(ForeignListener, f))
                        for f in data.get("foreign", ())
                    ),
                }
            )
        except (TypeError, ValueError, KeyError, AttributeError):
            return None


def _known(kind: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in data.items() if k in names}


def replica_json(status: ServiceStatus, row: ReplicaStatus, now: float) -> dict[str, Any]:
    """One row of ``ps --json`` (the keys scripts already read, plus ``ready``)."""
    sockets = row.sockets
    return {
        "service": status.name,
        "replica": row.index,
        "container_id": row.short_id,
        "state": row.state,
        "listening": row.listening,
        "ready": row.ready,
        "verdict": row.verdict,
        "pid": row.pid,
        "restarts": row.restarts,
        "uptime_s": round(now - row.started_at, 1) if row.running and row.started_at else None,
        "image": row.image,
        "retry_in_s": round(max(0.0, row.retry_at - now), 1) if row.retry_at else None,
        "last_error": row.last_error,
        "connections": sockets.connections if sockets else None,
        "accept_queue": sockets.accept_queue if sockets else None,
        "backlog": (sockets.backlog or None) if sockets else None,
        "share": sockets.share if sockets else None,
        "failing": row.why,
        "awaiting_health": row.awaiting_health,
        "check_error": row.check_error or None,
        "member": row.member,
        "out_why": row.out_why or None,
    }


def dumps(status: ServiceStatus) -> str:
    return json.dumps(status.to_json(), sort_keys=True)
