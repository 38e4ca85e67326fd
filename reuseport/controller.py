"""The decision core: desired count vs observed replicas -> actions. No I/O.

``plan`` is a pure function so it can be tested by replaying scripted histories. The
supervisor observes (engine + kernel), calls ``plan`` and applies the actions.

Rules, in the spirit of a Kubernetes ReplicaSet:
- indices ``1..desired`` each want exactly one running container;
- a container that is not running is a failure of its index: it is removed and, unless a
  healthy sibling of the same index runs, replaced (at once the first time, then with
  exponential backoff); one that never started is removed and replaced, no failure;
- surplus containers (duplicates of an index, or indices above ``desired`` after a scale
  down) are stopped gracefully, preferring to keep ready and older ones;
- a running replica that fails liveness (hung, or its health check) is replaced before it
  is stopped: its successor starts at once, outside the surge budget, and the failing one
  is stopped gracefully only once the successor is available, so capacity never dips;
- the running count never exceeds ``desired`` because creations only fill empty indices.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reuseport.backoff import SlotHealth, delay_after
from reuseport.policies import BackoffPolicy, RolloutPolicy


@dataclass(frozen=True)
class Observed:
    """One replica container as seen in one observation."""

    container_id: str
    index: int
    running: bool
    ready: bool  # the kernel shows a LISTEN socket on the port owned by this container
    started_at: float = 0.0
    reason: str = ""  # why it is not running, for a dead one
    spec_hash: str = ""  # the template it runs; "" matches any desired hash
    ready_for: float = 0.0  # seconds it has been seen listening
    failing: str = ""  # why it failed liveness while running ("" = live)
    # Created but never started: its creator (a supervisor SIGKILLed, an engine lost) stopped
    # between create and start. Not a death of its index: removed, and the index refilled.
    unstarted: bool = False


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
    # graceful: "surplus" (scale down, duplicate), "outdated" (rollout), "failing";
    # forced: "dead", "unstarted" (see Observed.unstarted)
    why: str = "surplus"


@dataclass(frozen=True)
class Replace:
    """A running replica failed liveness: count it once; a successor takes its index."""

    index: int
    container_id: str
    reason: str


@dataclass(frozen=True)
class Wait:
    """Index ``index`` is empty and in backoff until ``until``."""

    index: int
    until: float


Action = Create | Fail | Remove | Replace | Wait
DEFAULT_ROLLOUT = RolloutPolicy()


def plan(
    desired: int,
    observed: Sequence[Observed],
    slots: Mapping[int, SlotHealth],
    policy: BackoffPolicy,
    now: float,
    spec_hash: str = "",
    strategy: RolloutPolicy = DEFAULT_ROLLOUT,
    draining: int = 0,
) -> list[Action]:
    """``draining``: containers still shutting down (not in ``observed``); they count
    against the surge so the number of running containers never exceeds desired + surge."""
    by_index: dict[int, list[Observed]] = defaultdict(list)
    for replica in observed:
        by_index[replica.index].append(replica)

    def is_current(replica: Observed) -> bool:
        return not spec_hash or not replica.spec_hash or replica.spec_hash == spec_hash

    def available(replica: Observed) -> bool:
        settled = not is_current(replica) or replica.ready_for >= strategy.min_ready_s
        return replica.ready and settled and not replica.failing

    actions: list[Action] = []
    running_total = 0
    outdated_only: dict[int, Observed] = {}  # indices still served only by the old template
    unavailable = 0  # wanted indices without an available replica
    empty: list[int] = []
    successors: list[int] = []  # indices held only by a failing replica
    replaced: dict[int, float] = {}  # index -> retry time after this pass's replacements
    for index in sorted(set(by_index) | set(range(1, desired + 1))):
        group = by_index.get(index, [])
        wanted = 1 <= index <= desired
        order = lambda r: (not r.ready, r.started_at)  # noqa: E731 - keep ready, then older
        live = [r for r in group if r.running and not r.failing]
        failing = sorted((r for r in group if r.running and r.failing), key=order)
        current = sorted((r for r in live if is_current(r)), key=order)
        outdated = sorted((r for r in live if not is_current(r)), key=order)
        keep: list[Observed] = []
        if wanted and current:
            keep = current[:1]
            if outdated and not available(current[0]):
                keep += outdated[:1]  # the old one serves until its successor is available
        elif wanted and outdated:
            keep = outdated[:1]
            outdated_only[index] = outdated[0]
        if wanted and failing:
            actions += [Replace(index, r.container_id, r.failing) for r in failing]
            replaced[index] = _replaced_retry(failing, slots.get(index), policy, now)
            if not any(available(r) for r in keep):
                keep += failing[:1]  # whatever it still serves, until a successor is available
            if not current and not outdated:
                successors.append(index)  # replace before stop: outside the surge budget
        for surplus in [r for r in current + outdated + failing if r not in keep]:
            why = "failing" if surplus in failing else "surplus"
            why = "outdated" if wanted and surplus in outdated else why
            actions.append(Remove(index, surplus.container_id, graceful=True, why=why))
        running_total += len(keep)
        if wanted and not any(available(r) for r in keep):
            unavailable += 1
        for corpse in (r for r in group if not r.running):
            if wanted and not current and not corpse.unstarted:
                actions.append(_failure(index, corpse, slots.get(index), policy, now))
            why = "unstarted" if corpse.unstarted else "dead"
            actions.append(Remove(index, corpse.container_id, graceful=False, why=why))
        if wanted and not keep:
            empty.append(index)

    newly_failed = {a.index: a.retry_at for a in actions if isinstance(a, Fail)}

    def retry_at(index: int) -> float:
        slot = slots.get(index)
        known = slot.retry_at if slot else 0.0
        return max(newly_failed.get(index, known), replaced.get(index, known))

    # Backoff applies to a successor too: one that keeps failing (crashes at start, cannot
    # be created) is retried at the index's retry time, never on every pass.
    for index in empty + successors:
        actions.append(Create(index) if now >= retry_at(index) else Wait(index, retry_at(index)))
    # Roll the template forward (or back) index by index within the surge/unavailable budget.
    # Replicas told to drain in this pass still run until they have drained: count them.
    draining += sum(1 for a in actions if isinstance(a, Remove) and a.graceful)
    surge_left = desired + strategy.max_surge - running_total - len(empty) - draining
    for index, old in outdated_only.items():
        if now < retry_at(index):
            actions.append(Wait(index, retry_at(index)))
        elif surge_left > 0:
            actions.append(Create(index))
            surge_left -= 1
        elif unavailable < strategy.max_unavailable:
            actions.append(Remove(index, old.container_id, graceful=True, why="outdated"))
            unavailable += 1
    return actions


def _failure(
    index: int, corpse: Observed, slot: SlotHealth | None, policy: BackoffPolicy, now: float
) -> Fail:
    if slot is not None and corpse.container_id in slot.counted:
        return Fail(index, corpse.container_id, corpse.reason, slot.retry_at)
    failures = (slot.failures if slot else 0) + 1
    return Fail(index, corpse.container_id, corpse.reason, now + delay_after(failures, policy))


def _replaced_retry(
    failing: Sequence[Observed], slot: SlotHealth | None, policy: BackoffPolicy, now: float
) -> float:
    """A replacement is a failure of its index: the first after a stable period is
    replaced at once, a successor failing in turn waits out the growing backoff."""
    if slot is not None and all(r.container_id in slot.counted for r in failing):
        return slot.retry_at
    failures = (slot.failures if slot else 0) + 1
    return now + delay_after(failures, policy)
