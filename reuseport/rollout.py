"""Rolling a service to a new template with zero downtime, and back.

The rollout itself is declarative: this module writes the new spec to the store and the
supervisor (foreground or detached) converges index by index within the spec's
``RolloutPolicy`` (start new, wait until it listens for min-ready, drain an old one). Here
we only watch: a new replica that dies, or a rollout that does not finish in time, writes
the previous spec back, which the supervisor converges to the same way (new replicas
removed, old ones untouched). Interrupting the watch leaves the supervisor to finish.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from reuseport import labels, preflight, service
from reuseport.engine.base import Engine
from reuseport.errors import (
    InvalidSpec,
    RolloutFailed,
    RolloutInterrupted,
    ServiceNotFound,
    UidMismatch,
)
from reuseport.kernel import attribution, ports
from reuseport.policies import RolloutPolicy
from reuseport.spec import ServiceSpec, redact_value
from reuseport.store import StateStore

POLL_S = 0.2
DEPLOYED = ("deployed", "complete", "superseded")  # revisions that ran in full


@dataclass(frozen=True)
class Progress:
    updated: int  # replicas of the new template that listen
    outdated: int  # replicas of the old template still running
    desired: int


@dataclass(frozen=True)
class Outcome:
    revision: int
    image: str
    seconds: float


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def history(store: StateStore, name: str, reveal: bool = False) -> list[dict[str, Any]]:
    """The service's revisions, oldest first. Each ``env`` value is masked as its digest
    (``sha256:...``: equal values stay comparable) unless ``reveal``; the copies returned
    keep ``spec`` whole, which `rollout --undo` rebuilds the previous spec from: never
    print it."""
    revisions = store.load_history(name)
    if not revisions:
        spec = store.load_spec(name)
        if spec is None:
            raise ServiceNotFound(f"no service named {name!r} is up (see `reuseport ps`)")
        revisions = [new_revision(1, spec, "deployed")]
    if reveal:
        return revisions
    return [
        {**revision, "env": [[key, redact_value(value)] for key, value in revision.get("env", [])]}
        for revision in revisions
    ]


def new_revision(number: int, spec: ServiceSpec, result: str) -> dict[str, Any]:
    return {
        "revision": number,
        "image": spec.image,
        "env": [list(pair) for pair in spec.env],
        "spec": spec.to_json(),
        "time": _now(),
        "result": result,
    }


def target_spec(
    current: ServiceSpec,
    revisions: list[dict[str, Any]],
    *,
    image: str | None,
    env: tuple[tuple[str, str], ...] | None,
    policy: RolloutPolicy,
    undo: bool,
) -> ServiceSpec:
    if undo:
        if image or env:
            raise InvalidSpec("--undo takes no --image or -e: it returns to the previous revision")
        deployed = [r for r in revisions if r["result"] in DEPLOYED]
        if len(deployed) < 2:
            raise InvalidSpec(f"{current.name!r} has no earlier revision to return to")
        previous = deployed[-2]
        base = ServiceSpec.from_json(previous["spec"])
    else:
        if image is None and env is None:
            raise InvalidSpec("rollout needs --image and/or -e (or --undo)")
        # -e adds to (or overrides) the running environment, like `docker service update`.
        merged = tuple(sorted({**dict(current.env), **dict(env or ())}.items()))
        base = replace(current, image=image or current.image, env=merged)
    # Count, supervision and stop settings stay as they are; only the template moves.
    return replace(
        base,
        name=current.name,
        replicas=current.replicas,
        stop_timeout=current.stop_timeout,
        backoff=current.backoff,
        rollout=policy,
    )


def rollout(
    target: ServiceSpec,
    engine: Engine,
    store: StateStore,
    *,
    timeout_s: float,
    progress: Callable[[Progress], None],
    checked: Callable[[], None] = lambda: None,
) -> Outcome:
    """Roll ``target`` out; ``checked`` runs once every check passed, before any change."""
    current = store.load_spec(target.name)
    if current is None:
        raise ServiceNotFound(f"no service named {target.name!r} is up (see `reuseport ps`)")
    if target.spec_hash() == current.spec_hash():
        raise InvalidSpec(f"{target.name!r} already runs {target.image} with this environment")
    engine.require_image(target.image)
    _refuse_other_uid(engine, current, target)
    checked()
    revisions = history(store, target.name)
    number = max(r["revision"] for r in revisions) + 1
    revisions.append(new_revision(number, target, "in progress"))
    store.save_history(target.name, revisions)

    started = time.monotonic()
    deaths = _DeathWatch(engine, target.name, target.spec_hash())
    # Only the template moves: a `scale` meanwhile keeps its count (read-modify-write
    # under the store's lock).
    store.update_spec(target.name, lambda live: replace(target, replicas=live.replicas))
    try:
        failure = _wait(target, engine, store, started + timeout_s, deaths, progress)
    except KeyboardInterrupt:
        record(store, target.name, number, "in progress (watch interrupted)")
        raise RolloutInterrupted(
            f"stopped watching; the supervisor goes on rolling {target.name!r} out to "
            f"{target.image} (`reuseport rollout {target.name} --undo` goes back)"
        ) from None
    finally:
        deaths.close()
    if failure is None:
        for entry in revisions[:-1]:
            if entry["result"] in ("deployed", "complete"):
                entry["result"] = "superseded"
        revisions[-1]["result"] = "complete"
        store.save_history(target.name, revisions)
        return Outcome(number, target.image, time.monotonic() - started)

    previous = store.update_spec(target.name, lambda live: replace(current, replicas=live.replicas))
    back = _wait(previous, engine, store, time.monotonic() + timeout_s, None, progress)
    record(store, target.name, number, f"rolled back: {failure}")
    state = "rolled back to" if back is None else "rolling back to"
    raise RolloutFailed(
        f"rollout of {target.name!r} to {target.image} failed: {failure}; {state} {current.image}"
    )


def record(store: StateStore, name: str, number: int, result: str) -> None:
    revisions = store.load_history(name)
    for entry in revisions:
        if entry["revision"] == number:
            entry["result"] = result
    store.save_history(name, revisions)


def _refuse_other_uid(engine: Engine, current: ServiceSpec, target: ServiceSpec) -> None:
    new_uid = preflight.replica_uid(engine, target)
    for listener, replica in attribution.port_listeners(
        current.port, engine.replicas(current.name)
    ):
        verdict = ports.classify(ports.Owner.of(listener), new_uid, replica is not None, None)
        if verdict.ours and verdict.kind == "other-uid":
            raise UidMismatch(
                f"{target.image} would run as uid {new_uid} but the replicas of "
                f"{current.name!r} listen as uid {listener.uid}; {ports.UID_RULE}, so the new "
                "replicas could not share the port"
            )


def _wait(
    spec: ServiceSpec,
    engine: Engine,
    store: StateStore,
    deadline: float,
    deaths: _DeathWatch | None,
    progress: Callable[[Progress], None],
) -> str | None:
    """Until the supervisor publishes every replica of ``spec``'s template ready (by the
    judge's verdicts: listening and, when configured, past its health check) and none of
    another; returns why not, if not."""
    wanted = spec.spec_hash()
    while True:
        status = service.service_status(spec.name, engine, store)
        live = [r for r in status.replicas if r.running]
        updated = sum(1 for r in live if r.spec_hash == wanted and r.ready)
        outdated = sum(1 for r in live if r.spec_hash != wanted)
        desired = status.desired or spec.replicas
        progress(Progress(updated, outdated, desired))
        if status.spec_hash == wanted and status.converged():
            return None
        if deaths is not None and deaths.failure:
            return deaths.failure
        if time.monotonic() > deadline:
            return f"{updated}/{desired} new replicas ready when the timeout expired"
        time.sleep(POLL_S)


class _DeathWatch:
    """Watches the service's events for a replica of the new template that dies."""

    def __init__(self, engine: Engine, name: str, spec_hash: str) -> None:
        self.engine = engine
        self.spec_hash = spec_hash
        self.failure: str | None = None
        self._stream = engine.events(name)
        threading.Thread(target=self._run, daemon=True, name="rollout-deaths").start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                if (
                    event.get("Action") != "die"
                    or attributes.get(labels.SPEC_HASH) != self.spec_hash
                ):
                    continue
                if attributes.get(labels.ROLE) != labels.ROLE_REPLICA or not labels.is_owned(
                    attributes, str(attributes.get("name", ""))
                ):
                    continue  # a supervisor, or a container run from a committed replica
                code = attributes.get("exitCode", "?")
                # Read at once: the supervisor removes a dead replica right after replacing it.
                tail = self.engine.last_log_lines(str((event.get("Actor") or {}).get("ID", "")), 3)
                said = (
                    f"; last log lines: {' | '.join(line.strip() for line in tail)}" if tail else ""
                )
                index = attributes.get(labels.REPLICA, "?")
                self.failure = f"new replica {index} exited with code {code}{said}"
                return
        except Exception:  # noqa: BLE001 - a closed or broken stream ends the watch
            return

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead stream is harmless
            self._stream.close()
