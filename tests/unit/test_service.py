"""The operations behind `up`, `scale` and `ps`, against the in-memory engine: one
supervisor per service (the lease), adoption of an interrupted rollout, freshness."""

from __future__ import annotations

import functools
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reuseport import service
from reuseport.errors import ServiceNotFound, SpecConflict, SupervisorConflict
from reuseport.spec import ServiceSpec
from reuseport.status import ServiceStatus
from reuseport.store import StateStore
from reuseport.supervisor import Supervisor
from tests.unit.fakes import FakeEngine, listening_probe


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    engine = FakeEngine()
    # Supervisors made by `start` see the fake engine's containers listening at once.
    monkeypatch.setattr(
        service,
        "Supervisor",
        functools.partial(Supervisor, readiness=listening_probe(engine)),
    )
    return engine


def start(spec: ServiceSpec, engine: FakeEngine, store: StateStore) -> service.Started:
    return service.start(
        spec,
        engine,
        store,
        detach=False,
        ready_timeout_s=5,
        notify=lambda message: None,
        progress=lambda status: None,
    )


def spec() -> ServiceSpec:
    # The kernel's hash: these replicas are fakes, nothing here to steer (see test_steering).
    return ServiceSpec(name="svc", image="demo:1", replicas=2, port=free_port(), balance="hash")


def test_a_second_up_of_a_supervised_service_is_refused_naming_the_holder(
    engine: FakeEngine, tmp_path: Path
) -> None:
    store, wanted = StateStore(tmp_path), spec()
    first = start(wanted, engine, store)
    assert first.supervisor is not None and first.supervisor.lease is not None
    with pytest.raises(SupervisorConflict, match=r"already supervised by `reuseport up`"):
        start(wanted, engine, store)
    assert len(engine.running()) == 2  # the refused one created nothing
    service.require_supervisor(engine, store, "svc")  # the lease says one runs
    first.supervisor.release()
    with pytest.raises(ServiceNotFound, match="no running supervisor"):
        service.require_supervisor(engine, store, "svc")


def test_up_adopts_an_interrupted_rollout_and_refuses_a_third_template(
    engine: FakeEngine, tmp_path: Path
) -> None:
    store = StateStore(tmp_path)
    old = spec()
    new = replace(old, image="demo:2")
    engine.create_replica(old, 1, 0)
    halfway = engine.create_replica(new, 2, 0)  # its supervisor died half way through
    started = start(new, engine, store)
    assert started.supervisor is not None and len(started.adopted) == 2
    running = engine.running()
    assert halfway in {r.id for r in running}  # adopted, not restarted
    assert {r.spec_hash for r in running} == {new.spec_hash()} and len(running) == 2
    started.supervisor.release()
    engine.create_replica(old, 3, 0)  # two templates again, neither of them this one
    with pytest.raises(SpecConflict, match="different spec"):
        start(replace(old, image="demo:3"), engine, store)


def test_ps_says_when_the_published_status_is_stale(engine: FakeEngine, tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    started = start(spec(), engine, store)
    assert started.supervisor is not None
    sup = started.supervisor
    sup.publish_now(sup.reconcile())
    published = service.published_status(store, "svc")
    assert isinstance(published, ServiceStatus) and published.ready == 2
    # Our own pid is not "a live foreground supervisor" to ps: it judges what runs by
    # itself (here the real kernel: nothing listens) and keeps the publisher's age.
    seen: Any = service.service_status("svc", engine, store)
    assert seen.supervisor == f"none; last published by {published.supervisor}"
    assert seen.at == published.at and seen.ready == 0
    sup.release()
