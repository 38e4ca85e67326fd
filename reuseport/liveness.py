"""Is a replica hung? An app-independent answer read from the kernel.

A replica that is alive but stuck (stopped, deadlocked, spinning) keeps its LISTEN socket,
so the kernel keeps handing it about 1/N of new connections, which wait in its accept
queue. That is the signal: connections waiting in its accept queue that it does not take
for ``window`` seconds. Progress is either the queue shrinking or a connection it had not
held before appearing among its accepted sockets (socket inodes are never reused), so a
replica that is slow but still accepting is never called hung, however deep its queue.
"""

from __future__ import annotations

from dataclasses import dataclass

from reuseport.probe import ReplicaSockets


@dataclass(frozen=True)
class _Stall:
    since: float  # when it was first seen with a queue and no progress since
    queue: int
    connections: frozenset[int]


class HangDetector:
    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._stalls: dict[str, _Stall] = {}

    def observe(self, container_id: str, sockets: ReplicaSockets | None, now: float) -> None:
        """Feed one reading; it must include the replica's accepted connections."""
        if sockets is None or sockets.accept_queue == 0:
            self._stalls.pop(container_id, None)
            return
        before = self._stalls.get(container_id)
        progressed = before is None or (
            sockets.accept_queue < before.queue or bool(sockets.connections - before.connections)
        )
        since = now if progressed or before is None else before.since
        self._stalls[container_id] = _Stall(since, sockets.accept_queue, sockets.connections)

    def hung(self, container_id: str, now: float) -> str:
        """Why the replica counts as hung, or "" while it does not."""
        stall = self._stalls.get(container_id)
        if self.window_s <= 0 or stall is None or now - stall.since < self.window_s:
            return ""
        return (
            f"hung: {stall.queue} connection(s) left in its accept queue for "
            f"{now - stall.since:.1f}s"
        )

    def forget(self, keep: set[str]) -> None:
        for container_id in [c for c in self._stalls if c not in keep]:
            del self._stalls[container_id]
