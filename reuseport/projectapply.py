"""Applying a project file's plans with the operations `up -d`, `scale` and `rollout` use.

Nothing here decides (that is :mod:`reuseport.projectplan`) or prints (callbacks do): each
plan maps onto the existing operations, so a file and the flags behave the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from reuseport import rollout as rollouts
from reuseport import service
from reuseport.engine.base import Engine
from reuseport.errors import ReuseportError, ServiceNotFound, SpecConflict, StateUnreadable
from reuseport.projectplan import ServicePlan, plan, with_settings
from reuseport.spec import ServiceSpec
from reuseport.store import StateStore
from reuseport.supervisor import Notify
from reuseport.swarm import fileapply

if TYPE_CHECKING:  # the loader imports what `up` builds specs with; this needs only the type
    from reuseport.projectfile import ServiceEntry


@dataclass(frozen=True)
class Outcome:
    name: str
    error: ReuseportError | None  # None: applied (or nothing to do)
    message: str


def plans(entries: Sequence[ServiceEntry], engine: Engine, store: StateStore) -> list[ServicePlan]:
    """The plan of each entry against what the store holds and who supervises it."""
    return [
        plan(store.load_spec(entry.spec.name), entry.spec, _supervised(entry.spec, engine, store))
        for entry in entries
    ]


def _supervised(spec: ServiceSpec, engine: Engine, store: StateStore) -> bool:
    if _on_swarm(store, spec.name):
        return fileapply.is_running(spec.name)  # Swarm supervises its own services
    return service.is_supervised(engine, store, spec.name)


def _on_swarm(store: StateStore, name: str) -> bool:
    """Whether the stored spec says Swarm runs ``name`` (an unreadable one: no, the
    docker engine's path reports it)."""
    try:
        stored = store.load_spec(name)
    except StateUnreadable:
        return False
    return stored is not None and stored.engine == "swarm"


def apply(
    decided: ServicePlan,
    entry: ServiceEntry,
    engine: Engine,
    store: StateStore,
    *,
    notify: Notify,
    progress: Callable[[str], None],
) -> Outcome:
    """Carry ``decided`` out; a failure is returned (the other services still apply)."""
    name, wanted = decided.name, decided.wanted
    try:
        if decided.action == "refused":
            return refusal(decided)
        if wanted.engine == "swarm":
            ready, rollout = entry.ready_timeout, entry.rollout_timeout
            fileapply.apply(decided, ready, rollout, store, progress)
            return Outcome(name, None, _ready(wanted, f"{decided.action} (swarm)"))
        if decided.action == "create":
            service.start(
                wanted,
                engine,
                store,
                detach=True,  # a file's services outlive the command, like `up -d`
                ready_timeout_s=entry.ready_timeout,
                notify=notify,
                progress=lambda s: progress(
                    f"{name}: {s.ready}/{wanted.replicas} replicas ready on port {wanted.port}"
                ),
            )
            return Outcome(name, None, _ready(wanted, "up (detached)"))
        if decided.action == "no-op":
            return Outcome(name, None, f"{name}: unchanged")
        if decided.action == "rollout":
            _roll(decided, entry, engine, store, progress)
        elif decided.settings_changed:
            store.update_spec(name, lambda live: with_settings(live, wanted))
        if decided.replicas_changed:
            _scale(decided, entry, engine, store, progress)
        return Outcome(name, None, _ready(wanted, decided.action))
    except ReuseportError as exc:
        return Outcome(name, exc, f"{name}: {exc.message}")


def refusal(decided: ServicePlan) -> Outcome:
    """What a plan comes to without applying it (a dry run): an error only when refused."""
    if decided.action != "refused":
        return Outcome(decided.name, None, decided.describe())
    error = SpecConflict(f"{decided.name}: not applied: {'; '.join(decided.reasons)}")
    return Outcome(decided.name, error, error.message)


def _roll(
    decided: ServicePlan,
    entry: ServiceEntry,
    engine: Engine,
    store: StateStore,
    progress: Callable[[str], None],
) -> None:
    """The template and settings as the file says, at the running count (a scale follows)."""
    assert decided.running is not None
    service.require_supervisor(engine, store, decided.name)
    target = replace(decided.wanted, replicas=decided.running.replicas)
    rollouts.rollout(
        target,
        engine,
        store,
        timeout_s=entry.rollout_timeout,
        progress=lambda p: progress(
            f"{decided.name}: rolling out to {target.image}: {p.updated}/{p.desired} new "
            f"listening, {p.outdated} old left"
        ),
    )


def _scale(
    decided: ServicePlan,
    entry: ServiceEntry,
    engine: Engine,
    store: StateStore,
    progress: Callable[[str], None],
) -> None:
    name, replicas = decided.name, decided.wanted.replicas
    if decided.settings_changed and not decided.template_changed:
        store.update_spec(name, lambda live: with_settings(live, decided.wanted))
    service.scale(name, replicas, engine, store)
    service.wait_converged(
        name,
        engine,
        store,
        entry.ready_timeout,
        lambda s: progress(f"{name}: scaling to {replicas}: {s.ready}/{replicas} ready"),
    )


def _ready(spec: ServiceSpec, done: str) -> str:
    return f"{spec.name}: {done}, {spec.replicas} ready on port {spec.port}"


def down(
    entries: Sequence[ServiceEntry], engine: Engine, store: StateStore, notify: Notify
) -> list[Outcome]:
    """Take each entry's service down; one that is not up is said, not an error."""
    outcomes = []
    for entry in entries:
        name = entry.spec.name
        try:
            if _on_swarm(store, name):
                count = fileapply.down(name, store)
                outcomes.append(Outcome(name, None, f"{name}: removed {count} Swarm tasks"))
                continue
            count = service.down(name, engine, store, notify)
            outcomes.append(Outcome(name, None, f"{name}: stopped and removed {count} replicas"))
        except ServiceNotFound:
            outcomes.append(Outcome(name, None, f"{name}: not up, nothing to remove"))
        except ReuseportError as exc:
            outcomes.append(Outcome(name, exc, f"{name}: {exc.message}"))
    return outcomes


def failure(outcomes: Sequence[Outcome]) -> ReuseportError | None:
    """One error for the services that failed, of the first failure's class (its exit code)."""
    failed = [o for o in outcomes if o.error is not None]
    if not failed:
        return None
    first = failed[0].error
    assert first is not None
    names = ", ".join(o.name for o in failed)
    error = type(first)(f"{len(failed)} of {len(outcomes)} services not applied: {names}")
    return error
