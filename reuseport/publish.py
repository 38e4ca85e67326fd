"""The status a pass publishes, built from what the pass observed and decided. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reuseport.backoff import SlotHealth
from reuseport.engine.base import Replica
from reuseport.judge import AWAITING_HEALTH, Verdict
from reuseport.kernel.attribution import PortObservation
from reuseport.records import ReplicaRecord
from reuseport.spec import ServiceSpec
from reuseport.status import IndexStatus, ReplicaStatus, ServiceStatus, Sockets


@dataclass(frozen=True)
class PassResult:
    """What one pass knows: the listing, the records and verdicts, the backoff slots, the
    last full read of the port, and the indices waiting out their backoff (until when)."""

    spec: ServiceSpec
    listed: tuple[Replica, ...]
    records: Mapping[str, ReplicaRecord]
    verdicts: Mapping[str, Verdict]
    slots: Mapping[int, SlotHealth]
    port: PortObservation
    waiting: Mapping[int, float]
    replacements: Mapping[str, int]
    problem: str = ""
    membership: Mapping[str, str] = field(default_factory=dict)  # id -> why out ("" = in)
    balance: str = "hash"
    balance_note: str = ""
    check_errors: Mapping[str, str] = field(default_factory=dict)  # id -> last failed check


@dataclass(frozen=True)
class Publisher:
    mode: str  # "foreground" | "detached" | "" (judged without a supervisor)
    description: str
    pid: int | None
    pid_namespace: int | None


def service_status(done: PassResult, by: Publisher, now: float, wall: float) -> ServiceStatus:
    """The status of one pass: a row per listed container (its verdict, its sockets from
    the last full read of the port), a row per wanted index without one (pending, or in
    backoff until its retry time), and the per-index restarts and backoff. Monotonic
    times become epoch seconds so other processes read them right."""

    def epoch(monotonic: float | None) -> float | None:
        return None if monotonic is None else wall + (monotonic - now)

    port = done.port
    total = port.connections
    rows = []
    for replica in done.listed:
        record = done.records.get(replica.id)
        verdict = done.verdicts.get(replica.id)
        if record is None or verdict is None:
            continue
        slot = done.slots.get(replica.index)
        held = port.replicas.get(replica.id)
        counted = port.with_connections and replica.running
        out_why = done.membership.get(replica.id)  # None: not steered, "": in the map
        rows.append(
            ReplicaStatus(
                index=replica.index,
                container_id=replica.id,
                state=replica.state,
                verdict=verdict.kind,
                ready=verdict.ready,
                listening=verdict.listening,
                pid=(held.pid if held and held.pid else replica.pid) or None,
                image=replica.image,
                spec_hash=replica.spec_hash,
                started_at=replica.started_at,
                ready_since=epoch(record.ready_since),
                restarts=max(replica.restarts, slot.restarts if slot else 0),
                last_error=slot.last_error if slot else "",
                why=record.failing,
                sockets=Sockets(
                    len(held.connections) if held else 0,
                    held.accept_queue if held else 0,
                    held.backlog if held else 0,
                    round(len(held.connections) / total, 3) if held and total else 0.0,
                )
                if counted
                else None,
                member=None if out_why is None else not out_why,
                out_why=out_why or "",
                check_error=done.check_errors.get(replica.id, "")
                if verdict.kind == AWAITING_HEALTH
                else "",
            )
        )
    waiting = done.waiting
    present = {r.index for r in rows if r.running or r.state == "paused"}
    for index in range(1, done.spec.replicas + 1):
        if index in present:
            continue
        slot = done.slots.get(index)
        rows.append(
            ReplicaStatus(
                index=index,
                container_id=None,
                state="backoff" if index in waiting else "pending",
                verdict="backoff" if index in waiting else "pending",
                ready=False,
                listening=False,
                pid=None,
                image=done.spec.image,
                restarts=slot.restarts if slot else 0,
                retry_at=epoch(waiting.get(index)),
                last_error=slot.last_error if slot else "",
            )
        )
    indices = {
        i: IndexStatus(
            s.restarts,
            s.failures,
            epoch(s.retry_at) if s.retry_at > now else None,
            s.last_error,
        )
        for i, s in done.slots.items()
    }
    return ServiceStatus(
        name=done.spec.name,
        port=done.spec.port,
        image=done.spec.image,
        desired=done.spec.replicas,
        spec_hash=done.spec.spec_hash(),
        at=wall,
        replicas=tuple(sorted(rows, key=lambda r: (r.index, not r.running))),
        indices=indices,
        replacements=dict(done.replacements),
        foreign=port.foreign,
        mode=by.mode,
        supervisor=by.description,
        pid=by.pid,
        pid_namespace=by.pid_namespace,
        problem=done.problem,
        counted=port.with_connections,
        balance=done.balance,
        balance_note=done.balance_note,
    )
