"""Applying plans with the existing operations, against the in-memory engine and a real
store: settings change the stored spec in place, a refusal touches nothing, one failure
does not hide the others, and `down` of a service that is not up is not an error."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from reuseport import projectapply
from reuseport.errors import ReplicaFailed, SpecConflict
from reuseport.policies import HealthPolicy
from reuseport.projectplan import plan
from reuseport.spec import ServiceSpec
from reuseport.store import StateStore
from tests.unit.fakes import FakeEngine


@dataclass(frozen=True)
class Entry:  # what a project file's ServiceEntry carries
    spec: ServiceSpec
    ready_timeout: float = 5.0
    rollout_timeout: float = 5.0
    line: int = 1


def web(**changes: object) -> ServiceSpec:
    base = ServiceSpec(name="web", image="app:1", replicas=2, port=8080, balance="hash")
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def apply(wanted: ServiceSpec, engine: FakeEngine, store: StateStore) -> projectapply.Outcome:
    entry = Entry(wanted)
    (decided,) = projectapply.plans([entry], engine, store)  # type: ignore[list-item]
    return projectapply.apply(
        decided,
        entry,  # type: ignore[arg-type]
        engine,
        store,
        notify=lambda message: None,
        progress=lambda message: None,
    )


def test_a_settings_change_rewrites_the_stored_spec_and_keeps_template_and_count(
    store: StateStore,
) -> None:
    store.save_spec(web())
    engine = FakeEngine()
    with store.acquire_lease("web", "a supervisor"):
        outcome = apply(web(health=HealthPolicy(interval=4), stop_timeout=3), engine, store)
    assert outcome.error is None, outcome.message
    stored = store.load_spec("web")
    assert stored is not None
    assert (stored.health.interval, stored.stop_timeout, stored.replicas) == (4, 3, 2)
    assert stored.spec_hash() == web().spec_hash()
    assert engine.created == [] and engine.stopped == []


def test_a_refused_port_change_touches_nothing_and_is_a_spec_conflict(store: StateStore) -> None:
    store.save_spec(web())
    with store.acquire_lease("web", "a supervisor"):
        outcome = apply(web(port=9090), FakeEngine(), store)
    assert isinstance(outcome.error, SpecConflict)
    assert "8080 -> 9090" in outcome.message
    assert store.load_spec("web") == web()


def test_plans_see_who_supervises_a_stored_service(store: StateStore) -> None:
    store.save_spec(web())
    entries = [Entry(web())]
    (alone,) = projectapply.plans(entries, FakeEngine(), store)  # type: ignore[arg-type]
    assert alone.action == "create"  # nobody converges it: start a supervisor, adopting
    with store.acquire_lease("web", "a supervisor"):
        (held,) = projectapply.plans(entries, FakeEngine(), store)  # type: ignore[arg-type]
    assert held.action == "no-op"


def test_failure_names_every_failed_service_with_the_first_ones_exit_code() -> None:
    outcomes = [
        projectapply.Outcome("web", SpecConflict("refused"), ""),
        projectapply.Outcome("api", None, ""),
        projectapply.Outcome("db", ReplicaFailed("died"), ""),
    ]
    error = projectapply.failure(outcomes)
    assert isinstance(error, SpecConflict)
    assert error.message == "2 of 3 services not applied: web, db"
    assert projectapply.failure(outcomes[1:2]) is None


def test_a_dry_run_refusal_is_an_error_only_for_a_refused_plan() -> None:
    assert projectapply.refusal(plan(web(), web(replicas=3))).error is None
    refused = projectapply.refusal(plan(web(), web(port=1)))
    assert isinstance(refused.error, SpecConflict)


def test_down_of_a_service_that_is_not_up_is_said_not_failed(store: StateStore) -> None:
    outcomes = projectapply.down(
        [Entry(web())],  # type: ignore[list-item]
        FakeEngine(),
        store,
        notify=lambda message: None,
    )
    assert [(o.error, o.message) for o in outcomes] == [(None, "web: not up, nothing to remove")]
