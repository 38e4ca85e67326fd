"""What applying a project file does to one service: a pure decision, no engine.

From the spec the store holds for a service (None: not up) and the spec its file wants,
``plan`` picks the least disruptive way there and says why, naming what differs (env
variables by name, never their values):

- not up (or up with nothing supervising it): ``create`` (`up -d`, adopting what runs);
- the same template, count and settings: ``no-op`` (restarts nothing);
- a different port or engine: ``refused`` (the port cannot move under its clients, and a
  service does not move between engines while it runs);
- a different template (image, env, user, cpus, health port): ``rollout`` under the
  file's rollout policy, then a scale when the count differs too;
- only the count: ``scale``; only supervisor settings (balance, health, backoff, ...):
  ``settings``, written to the stored spec, which the supervisor follows without
  restarting a replica.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Literal

from reuseport.policies import HealthPolicy
from reuseport.spec import TEMPLATE_FIELDS, ServiceSpec, differences

Action = Literal["create", "no-op", "scale", "rollout", "settings", "refused"]
# Every field the supervisor reads live: neither the template nor the count.
SETTINGS_FIELDS = tuple(
    f.name
    for f in fields(ServiceSpec)
    if f.name not in ("name", "replicas", "engine", *TEMPLATE_FIELDS)
)
# Read only when a supervisor starts: a change is stored, and said to wait for a restart.
AT_SUPERVISOR_START = ("metrics_port", "metrics_addr")


@dataclass(frozen=True)
class ServicePlan:
    name: str
    action: Action
    wanted: ServiceSpec
    running: ServiceSpec | None
    # What differs, named: template changes, the count, settings; or why it is refused.
    reasons: tuple[str, ...] = ()
    template_changed: bool = False
    replicas_changed: bool = False
    settings_changed: tuple[str, ...] = ()  # e.g. ("balance: hash -> round-robin",)

    @property
    def changes(self) -> bool:
        return self.action not in ("no-op", "refused")

    def describe(self) -> str:
        """One line: ``web: rollout (image: a:1 -> a:2; replicas: 2 -> 3)``."""
        headline = {
            "create": f"create {_count(self.wanted.replicas)} of {self.wanted.image} "
            f"on port {self.wanted.port}"
            + (" (a Swarm service)" if self.wanted.engine == "swarm" else ""),
            "no-op": "unchanged, nothing to do (nothing restarts)",
            "scale": "scale",
            "rollout": "rolling update",
            "settings": "update settings (no replica restarts)",
            "refused": "REFUSED",
        }[self.action]
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        return f"{self.name}: {headline}{why}"


def plan(running: ServiceSpec | None, wanted: ServiceSpec, supervised: bool = True) -> ServicePlan:
    """The plan for one service. ``supervised``: something (a supervisor container or a
    foreground `up`) converges the stored spec; without, the service is started again."""
    if running is None:
        return ServicePlan(wanted.name, "create", wanted, None)
    if not supervised:
        return ServicePlan(
            wanted.name,
            "create",
            wanted,
            running,
            ("stored but not supervised: starting a supervisor, adopting its replicas",),
        )
    if running.port != wanted.port:
        return ServicePlan(
            wanted.name,
            "refused",
            wanted,
            running,
            (
                f"port: {running.port} -> {wanted.port}: the port cannot change under a "
                f"running service (its clients use {running.port}); run `reuseport down "
                f"{wanted.name}` and `up` again to move it",
            ),
        )
    if running.engine != wanted.engine:
        return ServicePlan(
            wanted.name,
            "refused",
            wanted,
            running,
            (
                f"engine: {running.engine} -> {wanted.engine}: a service cannot move between "
                f"engines while it runs; run `reuseport down {wanted.name}` and `up` again",
            ),
        )
    template = differences(running, wanted)
    replicas = running.replicas != wanted.replicas
    settings = tuple(settings_differences(running, wanted))
    reasons = [*template]
    if replicas:
        reasons.append(f"replicas: {running.replicas} -> {wanted.replicas}")
    reasons += settings
    action: Action
    if template:
        action = "rollout"
    elif replicas:
        action = "scale"
    elif settings:
        action = "settings"
    else:
        action = "no-op"
    return ServicePlan(
        wanted.name,
        action,
        wanted,
        running,
        tuple(reasons),
        template_changed=bool(template),
        replicas_changed=replicas,
        settings_changed=settings,
    )


def settings_differences(running: ServiceSpec, wanted: ServiceSpec) -> list[str]:
    """Named differences of the supervisor-only fields, policies by their own fields
    (``health.interval: 2.0 -> 5.0``); the health port counts as template, not here."""
    found: list[str] = []
    for key in SETTINGS_FIELDS:
        old, new = getattr(running, key), getattr(wanted, key)
        if isinstance(old, HealthPolicy) and isinstance(new, HealthPolicy):
            old, new = replace(old, port_base=None), replace(new, port_base=None)
        if old == new:
            continue
        later = " (takes effect when the supervisor restarts)" if key in AT_SUPERVISOR_START else ""
        if is_dataclass(old) and is_dataclass(new):
            for part in fields(old):
                a, b = getattr(old, part.name), getattr(new, part.name)
                if a != b:
                    found.append(f"{key}.{part.name}: {_show(a)} -> {_show(b)}")
        else:
            found.append(f"{key}: {_show(old)} -> {_show(new)}{later}")
    return found


def with_settings(live: ServiceSpec, wanted: ServiceSpec) -> ServiceSpec:
    """``live`` with ``wanted``'s supervisor-only settings; its template and count stay
    (a rollout or scale meanwhile keeps what it wrote)."""
    changed = {key: getattr(wanted, key) for key in SETTINGS_FIELDS}
    changed["health"] = replace(wanted.health, port_base=live.health.port_base)
    return replace(live, **changed)


def _show(value: object) -> str:
    if value is None:
        return "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _count(replicas: int) -> str:
    return f"{replicas} replica" + ("" if replicas == 1 else "s")
