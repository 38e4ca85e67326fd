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
class _Stall:
    since: float  # when it was first seen with a queue and no progress since
    queue: int
    connections: frozenset[int] | None  # None until a reading included connections


class HangDetector:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._stalls: dict[str, _Stall] = {}

    def observe(
        self,
        container_id: str,
        sockets: ReplicaSockets | None,
        now: float,
        with_connections: bool = True,
    ) -> None:
        """Feed one reading; ``with_connections=False`` when only listeners were read."""
        if sockets is None or sockets.accept_queue == 0:
            self._stalls.pop(container_id, None)
            return
        before = self._stalls.get(container_id)
        connections = sockets.connections if with_connections else None
        if before is None:
            self._stalls[container_id] = _Stall(now, sockets.accept_queue, connections)
            return
        progressed = sockets.accept_queue < before.queue or bool(
            connections is not None
            and before.connections is not None
            and connections - before.connections
        )
        self._stalls[container_id] = _Stall(
            now if progressed else before.since,
            sockets.accept_queue,
            connections if connections is not None else before.connections,
        )

    @property
    def suspects(self) -> bool:
        """Some replica has a queue and no progress yet: read the queues often."""
        return bool(self._stalls)

    def hung(self, container_id: str, now: float) -> str:
        """Why the replica counts as hung, or "" while it does not."""
        stall = self._stalls.get(container_id)
        if self.window_s <= 0 or stall is None or now - stall.since < self.window_s:
            return ""
        return (
            f"hung: {stall.queue} connection(s) left in its accept queue for "
            f"{now - stall.since:.1f}s"
        )

    def stalled_for(self, container_id: str, now: float) -> float:
        """Seconds its queue has held connections it did not take (0 when it accepts)."""
        stall = self._stalls.get(container_id)
        return now - stall.since if stall else 0.0

    def forget(self, keep: set[str]) -> None:
        for container_id in [c for c in self._stalls if c not in keep]:
            del self._stalls[container_id]
