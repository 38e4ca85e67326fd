"""Template changes roll out index by index within max-surge / max-unavailable, replayed
against a tiny simulated world (containers listen one step after they start)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import pytest

from reuseport.controller import Create, Observed, Remove, plan
from reuseport.policies import BackoffPolicy
from reuseport.policies import RolloutPolicy as Strategy

POLICY = BackoffPolicy()
OLD, NEW = "old-hash", "new-hash"


@dataclass
class World:
    containers: dict[str, Observed]
    ids = itertools.count()

    @classmethod
    def running(cls, n: int, spec_hash: str) -> World:
        world = cls({})
        for index in range(1, n + 1):
            world.add(index, spec_hash, ready=True, ready_for=100.0)
        return world

    def add(self, index: int, spec_hash: str, ready: bool = False, ready_for: float = 0.0) -> None:
        cid = f"c{next(self.ids)}"
        self.containers[cid] = Observed(
            cid, index, True, ready, float(next(self.ids)), spec_hash=spec_hash, ready_for=ready_for
        )

    def step(self, desired: int, spec_hash: str, strategy: Strategy, dt: float = 1.0) -> list:
        actions = plan(
            desired, list(self.containers.values()), {}, POLICY, 0.0, spec_hash, strategy
        )
        for action in actions:
            if isinstance(action, Create):
                self.add(action.index, spec_hash)
            elif isinstance(action, Remove):
                self.containers.pop(action.container_id, None)
        # time passes: started containers listen, listening ones accumulate ready time
        for cid, c in list(self.containers.items()):
            self.containers[cid] = replace(
                c, ready=True, ready_for=c.ready_for + dt if c.ready else 0.0
            )
        return actions

    def hashes(self) -> list[str]:
        return sorted(c.spec_hash for c in self.containers.values())

    def available(self, spec_hash: str, min_ready: float) -> int:
        indices = {
            c.index
            for c in self.containers.values()
            if c.ready and (c.spec_hash != spec_hash or c.ready_for >= min_ready)
        }
        return len(indices)


def test_converged_template_does_nothing() -> None:
    world = World.running(3, NEW)
    assert world.step(3, NEW, Strategy()) == []


def test_first_step_surges_one_replica_and_removes_nothing() -> None:
    world = World.running(4, OLD)
    actions = world.step(4, NEW, Strategy(max_surge=1))
    assert actions == [Create(1)]


@pytest.mark.parametrize(
    "strategy",
    [
        Strategy(1, 0, 0.0),
        Strategy(2, 0, 0.0),
        Strategy(1, 0, 2.0),
        Strategy(0, 1, 0.0),
        Strategy(2, 1, 1.0),
    ],
    ids=str,
)
def test_rollout_completes_within_its_budgets(strategy: Strategy) -> None:
    n = 4
    world = World.running(n, OLD)
    for _ in range(60):
        world.step(n, NEW, strategy)
        assert len(world.containers) <= n + strategy.max_surge
        assert world.available(NEW, strategy.min_ready_s) >= n - strategy.max_unavailable
        if world.hashes() == [NEW] * n and world.step(n, NEW, strategy) == []:
            break
    assert world.hashes() == [NEW] * n


def test_new_replica_must_stay_ready_for_min_ready_before_the_old_one_goes() -> None:
    world = World.running(1, OLD)
    strategy = Strategy(max_surge=1, min_ready_s=3.0)
    world.step(1, NEW, strategy)  # create the new one
    for _ in range(3):
        assert not any(isinstance(a, Remove) for a in world.step(1, NEW, strategy))
    assert any(isinstance(a, Remove) for a in world.step(1, NEW, strategy))


def test_rollback_keeps_the_old_replicas_and_removes_the_new() -> None:
    world = World.running(3, OLD)
    world.step(3, NEW, Strategy())
    world.step(3, NEW, Strategy())  # index 1 now has a ready NEW beside the OLD one
    old_ids = {cid for cid, c in world.containers.items() if c.spec_hash == OLD}
    for _ in range(10):
        world.step(3, OLD, Strategy())  # the spec went back
    assert world.hashes() == [OLD] * 3
    assert old_ids <= set(world.containers)  # no old replica was touched by the rollback


def test_max_unavailable_without_surge_removes_an_old_one_first() -> None:
    world = World.running(3, OLD)
    actions = world.step(3, NEW, Strategy(max_surge=0, max_unavailable=1))
    assert [type(a) for a in actions] == [Remove]


def test_draining_containers_count_against_the_surge() -> None:
    world = World.running(2, OLD)
    assert (
        plan(
            2,
            list(world.containers.values()),
            {},
            POLICY,
            0.0,
            NEW,
            Strategy(1, 0, 0.0),
            draining=1,
        )
        == []
    )


def test_the_pass_that_drains_an_old_replica_does_not_also_surge() -> None:
    world = World.running(2, OLD)
    world.add(1, NEW, ready=True, ready_for=5.0)  # index 1's successor is available
    actions = plan(2, list(world.containers.values()), {}, POLICY, 0.0, NEW, Strategy(1, 0, 0.0))
    assert [type(a) for a in actions] == [Remove]
