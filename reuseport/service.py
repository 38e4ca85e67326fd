"""The operations behind the commands: up, down, scale, status. No printing here:
progress goes through callbacks, failures raise from the error tree."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

import psutil

from reuseport import preflight
from reuseport.engine.base import Engine, Replica, SupervisorInfo
from reuseport.errors import (
    ReplicaFailed,
    ReuseportError,
    ServiceNotFound,
    SpecConflict,
    SupervisorConflict,
)
from reuseport.reconciler import observe_unsupervised, pid_namespace
from reuseport.spec import ServiceSpec, differences
from reuseport.status import STALE_AFTER_S, ServiceStatus
from reuseport.steering import Opener, kernel_opener
from reuseport.store import StateStore
from reuseport.supervisor import Notify, Supervisor, stop_all

SUPERVISOR_IMAGE = "reuseport:latest"
SUPERVISOR_START_S = 30.0
UP_OWNER = "`reuseport up`"  # how a lease held by `up` (bring-up or foreground) names itself


@dataclass(frozen=True)
class Started:
    supervisor: Supervisor | None  # None when a running detached supervisor took the change
    adopted: tuple[str, ...]  # container ids that were running before `up`


def published_status(store: StateStore, name: str) -> ServiceStatus | None:
    """The last status a supervisor published for ``name`` (None: none, or unreadable)."""
    return ServiceStatus.from_json(store.load_status(name))


def foreground_supervisor_pid(store: StateStore, name: str) -> int | None:
    """The pid of a live foreground supervisor of ``name``, if any: from its status, only
    when fresh and published from this pid namespace (a pid means nothing elsewhere)."""
    status = published_status(store, name)
    if status is None or status.mode != "foreground" or status.pid is None:
        return None
    if status.age(time.time()) > STALE_AFTER_S or status.pid_namespace != pid_namespace():
        return None
    pid = status.pid
    return pid if psutil.pid_exists(pid) and pid != os.getpid() else None


def kernel_steering(store: StateStore, name: str) -> Opener:
    """The kernel's steering for ``name``, adopting what its last supervisor attached."""
    return kernel_opener(
        lambda: store.load_steering(name), lambda handle: store.save_steering(name, handle)
    )


def live_supervisors(engine: Engine, name: str) -> list[SupervisorInfo]:
    return [s for s in engine.supervisors(name) if s.running]


def start(
    spec: ServiceSpec,
    engine: Engine,
    store: StateStore,
    *,
    detach: bool,
    ready_timeout_s: float,
    notify: Notify,
    progress: Callable[[ServiceStatus], None],
) -> Started:
    """Validate, adopt or create, and wait until every replica is ready. The caller of a
    foreground start holds the service's lease until it stops supervising."""
    engine.require_image(spec.image)
    if detach:
        engine.require_image(SUPERVISOR_IMAGE)
    existing = engine.replicas(spec.name)
    running_hashes = {r.spec_hash for r in existing if r.running}
    if len(running_hashes) > 1 and spec.spec_hash() in running_hashes:
        # A rollout was interrupted with its supervisor: adopt, and converge to this spec.
        notify(f"{spec.name} runs two templates (an interrupted rollout): converging to this one")
    else:
        _refuse_other_spec(spec, existing)
    detached = live_supervisors(engine, spec.name)
    foreground = foreground_supervisor_pid(store, spec.name)
    if foreground is not None or (detached and not detach):
        owner = f"pid {foreground}" if foreground else f"container {detached[0].id[:12]}"
        raise SpecConflict(
            f"{spec.name!r} is already supervised by {owner}; use `reuseport ps|scale|logs|down "
            f"{spec.name}`"
        )
    adopted = tuple(r.id for r in existing if r.running)
    if detached:
        holder = store.lease_owner(spec.name)
        if holder is not None and holder.startswith(UP_OWNER):
            # That supervisor container waits for an `up` that is still bringing the
            # service up: two `up` at once, this one is second.
            raise SupervisorConflict(
                f"{spec.name!r} is already supervised by {holder}; use `reuseport "
                f"ps|scale|logs|down {spec.name}`"
            )
        # `up -d` again: the running supervisor converges to the (possibly new) count;
        # creating replicas here too would race it.
        store.save_spec(spec)
        wait_converged(spec.name, engine, store, ready_timeout_s, lambda status: None)
        return Started(None, adopted)
    # Exactly one supervisor per service: two `up` at once meet here.
    lease = store.acquire_lease(spec.name, f"{UP_OWNER} (pid {os.getpid()})")
    if live_supervisors(engine, spec.name):
        # Another `up -d` finished between our look and our lease: it supervises now.
        lease.release()
        return start(
            spec,
            engine,
            store,
            detach=detach,
            ready_timeout_s=ready_timeout_s,
            notify=notify,
            progress=progress,
        )
    launching: Future[str] | None = None
    try:
        for stale in engine.supervisors(spec.name):  # exited supervisors of an earlier run
            engine.remove_supervisor(stale.id, timeout=0)
        preflight.check_port(engine, spec, existing)
        if spec.metrics_port is not None:
            preflight.check_free(spec.metrics_addr, spec.metrics_port, "--metrics-port")
        store.save_spec(spec)
        supervisor = Supervisor(
            spec,
            engine,
            store,
            mode="detached" if detach else "foreground",
            notify=notify,
            steering=kernel_steering(store, spec.name),
        )
        launched = time.time()
        if detach:
            # The container boots (a second of Python start-up) while the replicas come up;
            # it waits for the lease (reuseport.detached), held by this `up` until they are
            # ready.
            launching = _in_background(
                engine.start_supervisor, spec, SUPERVISOR_IMAGE, str(store.root.resolve())
            )
        supervisor.bring_up(ready_timeout_s, progress)
        if launching is not None:
            supervisor_id = launching.result()
            # Hand the lease over only now that the container exists: released earlier,
            # another `up` could take it, see no supervisor and remove ours as stale.
            lease.release()
            _wait_supervising(engine, store, spec.name, supervisor_id, launched)
        else:
            supervisor.lease = lease
    except BaseException:
        lease.release()
        # Leave nothing behind: remove what this `up` created; adopted replicas stay.
        if launching is not None and launching.exception() is None:
            engine.remove_supervisor(launching.result(), timeout=0)
        for replica in engine.replicas(spec.name):
            if replica.id not in adopted:
                engine.remove_replica(replica.id)
        if not adopted:
            store.forget(spec.name)
        raise
    return Started(supervisor, adopted)


def _in_background(call: Callable[..., str], *args: object) -> Future[str]:
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(call(*args))
        except BaseException as exc:  # handed to whoever asks the future
            future.set_exception(exc)

    threading.Thread(target=run, name="launch-supervisor", daemon=True).start()
    return future


def _wait_supervising(
    engine: Engine, store: StateStore, name: str, supervisor_id: str, since: float
) -> None:
    """Return once the detached supervisor has made a pass (so it knows every replica)."""
    deadline = time.monotonic() + SUPERVISOR_START_S
    while time.monotonic() < deadline:
        status = published_status(store, name)
        fresh = status is not None and status.mode == "detached" and status.at >= since
        if fresh and status is not None and status.pid != os.getpid():
            return
        if not any(s.id == supervisor_id and s.running for s in engine.supervisors(name)):
            break
        time.sleep(0.05)
    said = engine.last_log_lines(supervisor_id, 1)
    engine.remove_supervisor(supervisor_id, timeout=1)
    raise ReplicaFailed(
        f"the supervisor container did not start supervising {name!r}"
        + (f": {said[-1].strip()}" if said else "")
    )


def _refuse_other_spec(spec: ServiceSpec, existing: list[Replica]) -> None:
    for replica in existing:
        if replica.spec_hash == spec.spec_hash():
            continue
        # The label carries a redacted spec (env values as digests): compare like with like,
        # so the message names what differs and never shows a value.
        try:
            running = ServiceSpec.from_json(replica.spec_json).redacted()
            diff = differences(running, spec.redacted()) or ["a value the labels do not show"]
        except ReuseportError:
            diff = ["the running replicas carry an unreadable spec"]
        raise SpecConflict(
            f"{spec.name!r} already runs with a different spec ({'; '.join(diff)}): run "
            f"`reuseport down {spec.name}` first, or choose another --name"
        )


def supervise_foreground(
    supervisor: Supervisor,
    store: StateStore,
    stop: Callable[[float], bool],
    on_tick: Callable[[ServiceStatus], None],
    say: Notify,
) -> int | None:
    """Run ``supervisor`` in a thread until ``stop(timeout)`` says so (or the service was
    taken down elsewhere), then stop every replica and forget the service. Returns how
    many replicas were stopped (None: taken down elsewhere, nothing left to stop)."""
    outcome: list[str] = []
    crash: list[BaseException] = []

    def supervise_until_stopped() -> None:
        try:
            outcome.append(supervisor.run())
        except Exception as exc:  # noqa: BLE001 - reported below, after the replicas are down
            crash.append(exc)

    runner = threading.Thread(target=supervise_until_stopped, name="supervisor", daemon=True)
    runner.start()
    try:
        while runner.is_alive() and not stop(0.5):
            on_tick(supervisor.status)
    finally:
        supervisor.stop()
        runner.join(timeout=10)
    name = supervisor.spec.name
    try:
        if outcome == ["removed"]:
            return None
        say(
            f"stopping the replicas of {name} (SIGTERM, SIGKILL after "
            f"{supervisor.spec.stop_timeout}s)"
        )
        count = len(supervisor.engine.replicas(name))
        supervisor.drain()
        store.forget(name)
    finally:
        supervisor.release()
    if crash:
        raise ReuseportError(f"supervision of {name} failed: {type(crash[0]).__name__}: {crash[0]}")
    return count


def down(name: str, engine: Engine, store: StateStore, notify: Notify) -> int:
    """Stop supervising first (so nothing is re-created), then drain and remove replicas."""
    spec = store.load_spec(name)
    replicas = engine.replicas(name)
    supervisors = engine.supervisors(name)
    foreground = foreground_supervisor_pid(store, name)
    if spec is None and not replicas and not supervisors:
        raise ServiceNotFound(f"no service named {name!r} (see `reuseport ps`)")
    store.forget(name)  # a supervisor that sees its spec gone stops creating replicas
    for info in supervisors:
        notify(f"stopping supervisor {info.id[:12]}")
        engine.remove_supervisor(info.id, timeout=5)
    if foreground is not None:
        _wait_gone(foreground, timeout_s=5.0)
    timeout = spec.stop_timeout if spec else 10
    replicas = engine.replicas(name)  # re-list: a supervisor may have replaced one meanwhile
    notify(f"stopping {len(replicas)} replicas of {name} (stop timeout {timeout}s)")
    stop_all(engine, replicas, timeout)
    store.forget(name)
    return len(replicas)


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if psutil.pid_exists(pid):
        os.kill(pid, signal.SIGTERM)


def is_supervised(engine: Engine, store: StateStore, name: str) -> bool:
    """Whether something converges ``name``'s stored spec: a lease holder (a foreground
    `up`, or a supervisor mid-start) or a running supervisor container."""
    return store.lease_owner(name) is not None or bool(live_supervisors(engine, name))


def require_supervisor(engine: Engine, store: StateStore, name: str) -> None:
    """Refuse a change nobody would converge. The lease says whether a supervisor runs
    (a heartbeat can lag behind a slow engine call; a held lock cannot)."""
    if not is_supervised(engine, store, name):
        raise ServiceNotFound(
            f"{name!r} has no running supervisor to converge it; run `reuseport up` with the "
            "same spec to adopt its replicas"
        )


def scale(name: str, replicas: int, engine: Engine, store: StateStore) -> ServiceSpec:
    if store.load_spec(name) is None:
        raise ServiceNotFound(f"no service named {name!r} is up (see `reuseport ps`)")
    require_supervisor(engine, store, name)
    # Read-modify-write under the store's lock: a rollout writing the template at the same
    # moment keeps this count, and this keeps its template.
    return store.update_spec(name, lambda spec: spec.with_replicas(replicas))


def wait_converged(
    name: str,
    engine: Engine,
    store: StateStore,
    timeout_s: float,
    progress: Callable[[ServiceStatus], None],
) -> ServiceStatus:
    """Until the supervisor publishes the desired spec converged (every replica ready)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = service_status(name, engine, store)
        wanted = store.load_spec(name)
        progress(status)
        if (
            wanted is not None
            and status.spec_hash == wanted.spec_hash()
            and (status.desired == wanted.replicas and status.converged())
        ):
            return status
        if time.monotonic() > deadline:
            raise ReplicaFailed(
                f"{name!r} did not converge within {timeout_s:g}s: {status.ready}/"
                f"{status.desired} ready (see `reuseport ps {name}` and `reuseport logs {name}`)"
            )
        time.sleep(0.1)


def service_names(engine: Engine, store: StateStore) -> list[str]:
    names = {r.service for r in engine.replicas()} | set(store.names())
    names |= {s.service for s in engine.supervisors()}
    return sorted(names)


def service_status(name: str, engine: Engine, store: StateStore) -> ServiceStatus:
    """What `ps` shows: the live supervisor's published status; without a live one (or
    when it went stale), the same judgement made here from the engine and the kernel."""
    published = published_status(store, name)
    now = time.time()
    who = _supervisor_text(engine, store, name)
    if published is not None and who != "none" and published.age(now) <= STALE_AFTER_S:
        return published.with_supervisor(who)
    desired_spec = store.load_spec(name)
    spec = desired_spec
    replicas = engine.replicas(name)
    if spec is None and replicas:  # no desired state (e.g. taken down midway): use a label
        try:
            spec = ServiceSpec.from_json(replicas[0].spec_json)
        except ReuseportError:
            spec = None
    if spec is None:
        return ServiceStatus(name, None, "", None, "", now)
    observed = observe_unsupervised(spec, engine, published)
    if published is not None:  # say how stale the supervisor is, not just that it is
        observed = replace(observed, mode=published.mode, at=published.at)
        who = f"{who}; last published by {published.supervisor}"
    return replace(
        observed, desired=desired_spec.replicas if desired_spec else None
    ).with_supervisor(who)


def _supervisor_text(engine: Engine, store: StateStore, name: str) -> str:
    detached = live_supervisors(engine, name)
    if detached:
        return f"detached (container {detached[0].id[:12]})"
    pid = foreground_supervisor_pid(store, name)
    return f"foreground (pid {pid})" if pid else "none"
