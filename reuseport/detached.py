"""The supervisor container's side of a detached service: wait for the spec and the
service's lease (the `up` that started the container hands it over once its replicas
listen), then supervise until signalled or the service is taken down."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from reuseport.engine.base import Engine
from reuseport.errors import StateUnreadable, SupervisorConflict
from reuseport.service import kernel_steering
from reuseport.store import StateStore
from reuseport.supervisor import Notify, Supervisor

LEASE_RETRY_S = 0.1  # a supervisor container waiting for the lease (the `up` hands it over)


def detached_supervisor(
    name: str,
    engine: Engine,
    store: StateStore,
    stop: Callable[[float], bool],
    say: Notify,
) -> Supervisor | None:
    """The supervisor container's start: wait for a readable spec and for the service's
    lease (a second supervisor waits; it never supervises beside the first). None when
    stopped or the service was taken down meanwhile."""
    said = ""
    while True:
        try:
            spec = store.load_spec(name)
            if spec is None:
                return None
            lease = store.acquire_lease(name, f"detached supervisor (pid {os.getpid()})")
        except StateUnreadable as exc:
            message = f"PROBLEM: {exc}; the replicas run unsupervised until it is fixed"
        except SupervisorConflict as exc:
            message = f"waiting to supervise {name}: {exc}"
        else:
            supervisor = Supervisor(
                spec,
                engine,
                store,
                mode="detached",
                notify=say,
                steering=kernel_steering(store, name),
            )
            supervisor.lease = lease
            say(f"supervising {name}: {spec.replicas} replicas on port {spec.port}")
            return supervisor
        if message != said:
            say(message)
            said = message
        if stop(LEASE_RETRY_S):
            return None


def supervise_detached(supervisor: Supervisor, stop: Callable[[float | None], bool]) -> str:
    """Supervise until signalled (``stop(None)`` returns) or the service is taken down."""

    def stop_when_signalled() -> None:
        stop(None)
        supervisor.stop()

    threading.Thread(target=stop_when_signalled, daemon=True).start()
    return supervisor.run()
