"""The decision core: desired count vs observed replicas -> actions. No I/O.

``plan`` is a pure function so it can be tested by replaying scripted histories. The
supervisor observes (engine + kernel), calls ``plan`` and applies the actions.

Rules, in the spirit of a Kubernetes ReplicaSet:
- indices ``1..desired`` each want exactly one running container;
- a container that is not running is a failure of its index: it is removed and, unless a
  healthy sibling of the same index runs, replaced (at once the first time, then with
  exponential backoff);
- surplus containers (duplicates of an index, or indices above ``desired`` after a scale
  down) are stopped gracefully, preferring to keep ready and older ones;
- the running count never exceeds ``desired`` because creations only fill empty indices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reuseport.backoff import SlotHealth, delay_after
from reuseport.spec import BackoffPolicy


@dataclass(frozen=True)
class Observed:
    """One replica container as seen in one observation."""

    container_id: str
    index: int
    running: bool
    ready: bool  # the kernel shows a LISTEN socket on the port owned by this container
    started_at: float = 0.0
    reason: str = ""  # why it is not running, for a dead one


@dataclass(frozen=True)
class Create:
    index: int


@dataclass(frozen=True)
class Fail:
    """Record the death of ``container_id`` for ``index``; it is removed right after."""

    index: int
    container_id: str
    reason: str
    retry_at: float


@dataclass(frozen=True)
class Remove:
    """Remove a container: graceful stop for a surplus one, forced for a dead one."""

    index: int
    container_id: str
    graceful: bool


@dataclass(frozen=True)
class Wait:
    """Index ``index`` is empty and in backoff until ``until``."""

    index: int
    until: float


Action = Create | Fail | Remove | Wait


def plan(
    desired: int,
    observed: Sequence[Observed],
    slots: Mapping[int, SlotHealth],
    policy: BackoffPolicy,
    now: float,
) -> list[Action]:
    by_index: dict[int, list[Observed]] = defaultdict(list)
    for replica in observed:
        by_index[replica.index].append(replica)

    actions: list[Action] = []
    filled: set[int] = set()
    for index in sorted(by_index):
        group = by_index[index]
        running = sorted((r for r in group if r.running), key=lambda r: (not r.ready, r.started_at))
        wanted = 1 <= index <= desired
        keep = running[:1] if wanted else []
        filled.update(r.index for r in keep)
        for surplus in running[len(keep) :]:
            actions.append(Remove(index, surplus.container_id, graceful=True))
        dead = [r for r in group if not r.running]
        for corpse in dead:
            if wanted and not keep:
                actions.append(_failure(index, corpse, slots.get(index), policy, now))
            actions.append(Remove(index, corpse.container_id, graceful=False))

    newly_failed = {a.index: a.retry_at for a in actions if isinstance(a, Fail)}
    for index in range(1, desired + 1):
        if index in filled:
            continue
        slot = slots.get(index)
        retry_at = newly_failed.get(index, slot.retry_at if slot else 0.0)
        actions.append(Create(index) if now >= retry_at else Wait(index, retry_at))
    return actions


def _failure(
    index: int, corpse: Observed, slot: SlotHealth | None, policy: BackoffPolicy, now: float
) -> Fail:
    if slot is not None and corpse.container_id in slot.counted:
        return Fail(index, corpse.container_id, corpse.reason, slot.retry_at)
    failures = (slot.failures if slot else 0) + 1
    return Fail(index, corpse.container_id, corpse.reason, now + delay_after(failures, policy))
