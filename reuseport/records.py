"""The supervisor's memory of each container it has seen, one record per container.

The engine says what a container is (running, exited, its labels); the record holds what
only the supervisor knows about it: when it was first seen, when it was first ready, why it
is being replaced, whether its replacement was counted, whether it is draining, its accept
queue stall. A record is created the first time a listing shows the container and
forgotten in exactly one place, :meth:`Records.forget`, when a listing no longer shows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from reuseport.liveness import Stall


@dataclass
class ReplicaRecord:
    container_id: str
    index: int
    first_seen: float  # monotonic: the supervisor's clock
    ready_since: float | None = None  # first judged ready (min-ready, bind-conflict test)
    failing: str = ""  # why it is being replaced; sticky once set
    counted: bool = False  # its replacement was counted (restarts, metrics, backoff)
    draining: bool = False  # a graceful stop is in progress
    removed_by_us: bool = False  # its disappearance is not a death
    stall: Stall | None = None  # connections waiting in its accept queue, no progress since

    @property
    def ever_ready(self) -> bool:
        return self.ready_since is not None


class Records:
    def __init__(self) -> None:
        self._by_id: dict[str, ReplicaRecord] = {}

    def track(self, container_id: str, index: int, now: float) -> ReplicaRecord:
        record = self._by_id.get(container_id)
        if record is None:
            record = self._by_id[container_id] = ReplicaRecord(container_id, index, now)
        return record

    def get(self, container_id: str) -> ReplicaRecord | None:
        return self._by_id.get(container_id)

    def sync(self, listed: Iterable[str]) -> list[ReplicaRecord]:
        """Forget the containers a fresh listing no longer shows; returns their records."""
        present = set(listed)
        return [self.forget(c) for c in [c for c in self._by_id if c not in present]]

    def forget(self, container_id: str) -> ReplicaRecord:
        """The one place a container's state is dropped: the container is gone for good."""
        return self._by_id.pop(container_id)

    def __iter__(self) -> Iterator[ReplicaRecord]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)
