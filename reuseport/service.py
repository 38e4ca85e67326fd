"""The operations behind the commands: up, down, scale, status. No printing here:
progress goes through callbacks, failures raise from the error tree."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from reuseport import preflight, probe
from reuseport.engine.base import Engine, Replica, SupervisorInfo
from reuseport.errors import ReplicaFailed, ReuseportError, ServiceNotFound, SpecConflict
from reuseport.spec import ServiceSpec, differences
from reuseport.store import StateStore
from reuseport.supervisor import Notify, Snapshot, Supervisor, stop_all
from reuseport.view import ServiceView, replica_rows

SUPERVISOR_IMAGE = "reuseport:latest"
STALE_HEARTBEAT_S = 10.0
SUPERVISOR_START_S = 30.0


@dataclass(frozen=True)
class Started:
    supervisor: Supervisor | None  # None when a running detached supervisor took the change
    adopted: tuple[str, ...]  # container ids that were running before `up`


def foreground_supervisor_pid(store: StateStore, name: str) -> int | None:
    """The pid of a live foreground supervisor of ``name`` (from its status file), if any."""
    status = store.load_status(name)
    info = status.get("supervisor") or {}
    pid = info.get("pid")
    if status.get("mode") != "foreground" or not isinstance(pid, int):
        return None
    if time.time() - float(info.get("heartbeat", 0)) > STALE_HEARTBEAT_S:
        return None
    return pid if psutil.pid_exists(pid) and pid != os.getpid() else None


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
    progress: Callable[[Snapshot], None],
) -> Started:
    """Validate, adopt or create, and wait until every replica listens."""
    engine.require_image(spec.image)
    if detach:
        engine.require_image(SUPERVISOR_IMAGE)
    existing = engine.replicas(spec.name)
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
        # `up -d` again: the running supervisor converges to the (possibly new) count;
        # creating replicas here too would race it.
        store.save_spec(spec)
        wait_converged(spec.name, engine, store, ready_timeout_s, lambda view: None)
        return Started(None, adopted)
    for stale in engine.supervisors(spec.name):  # exited supervisors of an earlier run
        engine.remove_supervisor(stale.id, timeout=0)
    preflight.check_port(engine, spec, {r.id for r in existing})
    if spec.metrics_port is not None:
        preflight.check_free(spec.metrics_addr, spec.metrics_port, "--metrics-port")
    store.save_spec(spec)
    supervisor = Supervisor(
        spec, engine, store, mode="detached" if detach else "foreground", notify=notify
    )
    try:
        supervisor.bring_up(ready_timeout_s, progress)
        if detach and not detached:
            launched = time.time()
            supervisor_id = engine.start_supervisor(
                spec, SUPERVISOR_IMAGE, str(store.root.resolve())
            )
            _wait_supervising(engine, store, spec.name, supervisor_id, launched)
    except BaseException:
        # Leave nothing behind: remove what this `up` created; adopted replicas stay.
        for replica in engine.replicas(spec.name):
            if replica.id not in adopted:
                engine.remove_replica(replica.id)
        if not adopted:
            store.forget(spec.name)
        raise
    return Started(supervisor, adopted)


def _wait_supervising(
    engine: Engine, store: StateStore, name: str, supervisor_id: str, since: float
) -> None:
    """Return once the detached supervisor has made a pass (so it knows every replica)."""
    deadline = time.monotonic() + SUPERVISOR_START_S
    while time.monotonic() < deadline:
        heartbeat = (store.load_status(name).get("supervisor") or {}).get("heartbeat", 0)
        if heartbeat >= since:
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


def require_supervisor(engine: Engine, store: StateStore, name: str) -> None:
    if not live_supervisors(engine, name) and foreground_supervisor_pid(store, name) is None:
        raise ServiceNotFound(
            f"{name!r} has no running supervisor to converge it; run `reuseport up` with the "
            "same spec to adopt its replicas"
        )


def scale(name: str, replicas: int, engine: Engine, store: StateStore) -> ServiceSpec:
    spec = store.load_spec(name)
    if spec is None:
        raise ServiceNotFound(f"no service named {name!r} is up (see `reuseport ps`)")
    require_supervisor(engine, store, name)
    scaled = spec.with_replicas(replicas)
    store.save_spec(scaled)
    return scaled


def wait_converged(
    name: str,
    engine: Engine,
    store: StateStore,
    timeout_s: float,
    progress: Callable[[ServiceView], None],
) -> ServiceView:
    deadline = time.monotonic() + timeout_s
    while True:
        view = service_view(name, engine, store)
        progress(view)
        running = [row for row in view.rows if row.container_id and row.state == "running"]
        if view.ready == view.desired and len(running) == view.desired:
            return view
        if time.monotonic() > deadline:
            raise ReplicaFailed(
                f"{name!r} did not converge within {timeout_s:g}s: {view.ready}/{view.desired} "
                f"listening (see `reuseport ps {name}` and `reuseport logs {name}`)"
            )
        time.sleep(0.1)


def service_names(engine: Engine, store: StateStore) -> list[str]:
    names = {r.service for r in engine.replicas()} | set(store.names())
    names |= {s.service for s in engine.supervisors()}
    return sorted(names)


def service_view(name: str, engine: Engine, store: StateStore) -> ServiceView:
    desired_spec = store.load_spec(name)
    spec = desired_spec
    replicas = engine.replicas(name)
    if spec is None and replicas:  # no desired state (e.g. taken down midway): use a label
        try:
            spec = ServiceSpec.from_json(replicas[0].spec_json)
        except ReuseportError:
            spec = None
    port = spec.port if spec else None
    sockets = probe.observe(port, replicas) if port else None
    status = store.load_status(name)
    desired = desired_spec.replicas if desired_spec else None
    rows = replica_rows(
        name,
        spec.image if spec else "",
        replicas,
        sockets.listening if sockets else {},
        status.get("slots", {}),
        desired,
        time.time(),
        sockets,
        status.get("failing", {}),
        status.get("awaiting_health", ()),
    )
    return ServiceView(
        name,
        port,
        desired,
        tuple(rows),
        _supervisor_text(engine, store, name),
        sockets.foreign if sockets else (),
        status.get("replacements", {}),
    )


def _supervisor_text(engine: Engine, store: StateStore, name: str) -> str:
    detached = live_supervisors(engine, name)
    if detached:
        return f"detached (container {detached[0].id[:12]})"
    pid = foreground_supervisor_pid(store, name)
    return f"foreground (pid {pid})" if pid else "none"
