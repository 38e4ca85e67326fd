"""Is a replica hung? An app-independent answer read from the kernel.

A replica that is alive but stuck (stopped, deadlocked, spinning) keeps its LISTEN socket,
so the kernel keeps handing it about 1/N of new connections, which wait in its accept
queue. That is the signal: connections waiting in its accept queue that it does not take
for ``window`` seconds. Only ``accept()`` shrinks an accept queue (a client giving up does
not), so a hung replica's queue never shrinks. Progress is either the queue shrinking
between two readings or a connection it had not held before appearing among its accepted
sockets (socket inodes are never reused). While a replica is suspect the supervisor reads
its queue every ``SUSPECT_POLL_S``: a replica that is slow but still accepting shows a
shrink within milliseconds, so it is never called hung, however deep its queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from reuseport.kernel.attribution import ReplicaSockets

SUSPECT_POLL_S = 0.05  # queue readings while a replica is suspect (a listener read: ~0.1 ms)


@dataclass(frozen=True)
class Stall:
    """A replica seen with connections in its accept queue and no progress since ``since``."""

    since: float
    queue: int
    connections: frozenset[int] | None  # None until a reading included connections


def advance(
    stall: Stall | None,
    sockets: ReplicaSockets | None,
    now: float,
    with_connections: bool = True,
) -> Stall | None:
    """Fold one reading into the replica's stall (None: it has no queue, nothing to watch).
    ``with_connections=False`` when only listeners were read."""
    if sockets is None or sockets.accept_queue == 0:
        return None
    connections = sockets.connections if with_connections else None
    if stall is None:
        return Stall(now, sockets.accept_queue, connections)
    progressed = sockets.accept_queue < stall.queue or bool(
        connections is not None
        and stall.connections is not None
        and connections - stall.connections
    )
    return Stall(
        now if progressed else stall.since,
        sockets.accept_queue,
        connections if connections is not None else stall.connections,
    )


def hung(stall: Stall | None, window_s: float, now: float) -> str:
    """Why the replica counts as hung, or "" while it does not (``window_s`` 0: never)."""
    if window_s <= 0 or stall is None or now - stall.since < window_s:
        return ""
    return (
        f"hung: {stall.queue} connection(s) left in its accept queue for {now - stall.since:.1f}s"
    )


def stalled_for(stall: Stall | None, now: float) -> float:
    """Seconds its queue has held connections it did not take (0 when it accepts)."""
    return now - stall.since if stall else 0.0
