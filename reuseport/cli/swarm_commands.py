"""The commands' Swarm side: what `up`, `ps`, `logs`, `scale`, `rollout` and `down` do for
a service whose stored spec says ``engine = "swarm"`` (``reuseport.swarm``)."""

from __future__ import annotations

import sys

from reuseport.cli._common import err, say
from reuseport.errors import StateUnreadable
from reuseport.spec import ServiceSpec
from reuseport.store import StateStore
from reuseport.swarm import service as swarm
from reuseport.swarm.engine import SwarmEngine
from reuseport.swarm.render import balance_text
from reuseport.swarm.service import SwarmView


def is_swarm(store: StateStore, name: str) -> bool:
    """Whether the stored spec says Swarm runs ``name``. An unreadable spec file is not
    an error here: the docker engine's path reports it as the service's problem (and a
    spec file that cannot be read never means "removed")."""
    try:
        spec = store.load_spec(name)
    except StateUnreadable:
        return False
    return spec is not None and spec.engine == "swarm"


def _progress_line(spec: ServiceSpec, seen: SwarmView) -> str:
    unchecked = f" ({seen.unchecked} awaiting their node's agent)" if seen.unchecked else ""
    return f"{seen.ready}/{spec.replicas} tasks of {spec.name} ready on port {spec.port}{unchecked}"


def up(spec: ServiceSpec, store: StateStore, ready_timeout_s: float) -> None:
    engine = SwarmEngine.from_env()
    created = swarm.up(spec, engine, store)
    verb = "creating" if created else "found"
    with err.status(f"{verb} Swarm service {spec.name}") as status:
        seen = swarm.wait_ready(
            spec,
            engine,
            store,
            ready_timeout_s,
            lambda v: status.update(_progress_line(spec, v)),
        )
    found = "" if created else " (already running this spec)"
    say(f"{spec.name}: {_progress_line(spec, seen)}{found}; engine: swarm")
    if spec.balance != "hash":
        say(
            f"balance: {balance_text(seen)}: each node's agent steers its kernel's group "
            "(`ps` shows each task in or out of its node's map)"
        )
    if spec.metrics_port is not None:
        say(
            f"metrics from each node's agent on http://{spec.metrics_addr}:"
            f"{spec.metrics_port}/metrics (on that node)"
        )
    say(
        f"Swarm keeps it running; see `reuseport ps {spec.name}`, "
        f"stop with `reuseport down {spec.name}`"
    )


def views(names: list[str], store: StateStore) -> list[SwarmView]:
    engine = SwarmEngine.from_env()
    return [swarm.view(name, engine, store) for name in names]


def scale(name: str, replicas: int, store: StateStore, wait: bool, timeout_s: float) -> None:
    engine = SwarmEngine.from_env()
    spec = swarm.scale(name, replicas, engine, store)
    if not wait:
        say(f"{name}: desired tasks set to {replicas} (Swarm converges)")
        return
    with err.status(f"scaling {name} to {replicas}") as status:
        seen = swarm.wait_ready(
            spec, engine, store, timeout_s, lambda v: status.update(_progress_line(spec, v))
        )
    say(f"{name}: {_progress_line(spec, seen)}")


def rollout(target: ServiceSpec, store: StateStore, timeout_s: float) -> None:
    engine = SwarmEngine.from_env()
    with err.status(f"rolling {target.name} out to {target.image} (a Swarm update)") as st:
        outcome = swarm.rollout(
            target,
            engine,
            store,
            timeout_s=timeout_s,
            progress=lambda v: st.update(
                f"rolling {target.name} out to {target.image}: {_progress_line(target, v)}"
                + (f", Swarm: {v.update}" if v.update else "")
            ),
        )
    say(
        f"{target.name}: revision {outcome.revision} ({outcome.image}) rolled out to "
        f"{target.replicas} tasks in {outcome.seconds:.1f}s"
    )


def down(name: str, store: StateStore) -> None:
    engine = SwarmEngine.from_env()
    with err.status(f"removing Swarm service {name}"):
        count = swarm.down(name, engine, store)
    say(f"{name}: removed the Swarm service and its {count} tasks")


def logs(name: str, follow: bool, tail: int | str) -> None:
    engine = SwarmEngine.from_env()
    for chunk in engine.logs(name, follow=follow, tail=tail):
        sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()
