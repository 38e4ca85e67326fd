"""Per-replica crash-loop backoff.

The first failure after a healthy period is replaced at once (a lone crash should cost no
more than Docker's own restart policy); each further consecutive failure doubles the wait
from ``initial`` up to ``maximum``. A replica that has listened for ``reset_after`` seconds
is forgiven.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reuseport.policies import BackoffPolicy

MAX_REMEMBERED = 32


def delay_after(failures: int, policy: BackoffPolicy) -> float:
    """Seconds to wait before replacing a replica that has failed ``failures`` times in a row."""
    if failures <= 1:
        return 0.0
    return min(policy.initial * 2 ** (failures - 2), policy.maximum)


@dataclass
class SlotHealth:
    """What the supervisor remembers about one replica index across its containers."""

    failures: int = 0  # consecutive failures since the last stable period
    restarts: int = 0  # replacements made since the service started
    retry_at: float = 0.0  # monotonic time before which no replacement is created
    ready_since: float | None = None
    last_error: str = ""
    # ids whose death was counted (insertion-ordered, bounded: only recent ones can reappear)
    counted: dict[str, None] = field(default_factory=dict)


class BackoffBook:
    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self.slots: dict[int, SlotHealth] = {}

    def slot(self, index: int) -> SlotHealth:
        return self.slots.setdefault(index, SlotHealth())

    def record_failure(self, index: int, container_id: str, reason: str, now: float) -> float:
        """Count one death (idempotent per container) and return when to retry."""
        slot = self.slot(index)
        if container_id not in slot.counted:
            slot.counted[container_id] = None
            while len(slot.counted) > MAX_REMEMBERED:
                del slot.counted[next(iter(slot.counted))]
            slot.failures += 1
            slot.restarts += 1
            slot.retry_at = now + delay_after(slot.failures, self.policy)
            slot.ready_since = None
            slot.last_error = reason
        return slot.retry_at

    def record_ready(self, index: int, now: float) -> None:
        slot = self.slot(index)
        if slot.ready_since is None:
            slot.ready_since = now
        elif slot.failures and now - slot.ready_since >= self.policy.reset_after:
            slot.failures = 0
            slot.last_error = ""

    def record_not_ready(self, index: int) -> None:
        self.slot(index).ready_since = None

    def forget(self, index: int) -> None:
        """Drop an index the service no longer wants (scaled down)."""
        self.slots.pop(index, None)
