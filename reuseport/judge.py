"""The judge: what one observation of a replica means. Pure; no I/O, no clock of its own.

Every verdict about a replica is made here, once per pass, and published in the service
status: ``ps``, ``top``, the live table, ``/metrics``, ``scale`` and ``rollout`` read it,
none re-derives it. :func:`is_ready` is THE definition of a ready replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from reuseport import liveness
from reuseport.engine.base import Replica
from reuseport.kernel.attribution import ReplicaSockets
from reuseport.records import ReplicaRecord

READY = "ready"
STARTING = "starting"  # running, not listening yet
AWAITING_HEALTH = "awaiting-health"  # listening, its first app-level check not passed yet
NOT_LISTENING = "not-listening"  # was ready once, has no listener now
FAILING = "failing"  # hung, unhealthy or never listened: being replaced
DRAINING = "draining"  # stopping gracefully (scale down, rollout, replaced)
PAUSED = "paused"  # paused outside reuseport: unpaused by the supervisor
DEAD = "dead"  # not running: replaced under backoff

# Steering: a ready replica whose accept queue has not moved for this long is taken out of
# the steering map at once (it re-enters when the queue moves), far ahead of the hang
# window that replaces it. Slow-but-accepting replicas show progress within milliseconds.
SUSPECT_AFTER_S = 0.25


@dataclass(frozen=True)
class Verdict:
    kind: str
    ready: bool
    listening: bool
    why: str = ""  # for FAILING: why it is being replaced


@dataclass(frozen=True)
class Limits:
    hang_window_s: float  # 0: hang detection off
    start_timeout_s: float  # a replica that never listens within this is failing
    port: int


def is_ready(listening: bool, health_passed: bool | None, failing: bool, draining: bool) -> bool:
    """Ready = the kernel shows it listening on the port, it passed its app-level check
    once (when one is configured: ``health_passed`` None means none is), and it is neither
    being replaced nor drained. Only ready replicas count for bring-up, scale, rollout,
    ``ps``'s READY and ``/metrics``."""
    return listening and health_passed is not False and not failing and not draining


def judge(
    replica: Replica,
    record: ReplicaRecord,
    sockets: ReplicaSockets | None,
    health_passed: bool | None,
    unhealthy: str,
    limits: Limits,
    now: float,
    running_for: float | None = None,
) -> Verdict:
    """One replica's verdict from the engine's view, the kernel's (``sockets``), its
    app-level check and the supervisor's record of it. ``running_for``: seconds since its
    container started (default: since the supervisor first saw it)."""
    listening = bool(sockets and sockets.listeners)
    if replica.state == "paused":
        return Verdict(PAUSED, False, listening)
    if not replica.running:
        return Verdict(DEAD, False, False)
    if record.draining:
        return Verdict(DRAINING, False, listening)
    why = record.failing
    if not why and listening:
        ran = now - record.first_seen if running_for is None else running_for
        why = liveness.hung(record.stall, limits.hang_window_s, now) or counted_unhealthy(
            unhealthy, health_passed, ran, limits
        )
    if not why and not listening and not record.ever_ready:
        waited = now - record.first_seen
        if limits.start_timeout_s > 0 and waited >= limits.start_timeout_s:
            why = f"never listened on port {limits.port} within {limits.start_timeout_s:g}s"
    if why:
        return Verdict(FAILING, False, listening, why)
    if listening:
        ready = is_ready(listening, health_passed, failing=False, draining=False)
        return Verdict(READY if ready else AWAITING_HEALTH, ready, listening)
    return Verdict(NOT_LISTENING if record.ever_ready else STARTING, False, False)


def counted_unhealthy(
    unhealthy: str, health_passed: bool | None, running_for: float, limits: Limits
) -> str:
    """Failed app-level checks make a replica unhealthy once it has passed one, or once it
    has run for its start timeout without passing any. Checks start with the container,
    and an app starting on a busy host answers its HEALTH_PORT a moment later: counted,
    those refused checks replaced a replica that was just starting (Docker's health start
    period and Kubernetes' startup probe exist for the same reason)."""
    if not unhealthy:
        return ""
    if health_passed or running_for >= limits.start_timeout_s:
        return unhealthy
    return ""


def out_of_steering(verdict: Verdict, stall: liveness.Stall | None, now: float) -> str:
    """Why a replica must not be in the steering map ("" = it belongs there): only a ready
    replica that is not suspect takes new connections while steering is on."""
    if verdict.kind != READY:
        return verdict.why or verdict.kind
    return suspect_why(stall, now)


def suspect_why(stall: liveness.Stall | None, now: float) -> str:
    """Why a listening replica is suspect ("" = it is not): its accept queue has held
    connections it did not take for SUSPECT_AFTER_S."""
    stalled = liveness.stalled_for(stall, now)
    if stalled >= SUSPECT_AFTER_S:
        return f"suspect: accept queue unmoved for {stalled:.1f}s"
    return ""
