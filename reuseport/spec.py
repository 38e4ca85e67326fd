"""What the user wants: a frozen, validated description of one service.

``ServiceSpec`` is pure data. Validation lives here and raises :class:`InvalidSpec` with a
one-line message naming the bad value. ``spec_hash`` covers only the container template
(image, port, env, user): changing the replica count or supervision settings never
restarts a replica, while any template change is a different spec.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from reuseport.errors import InvalidSpec
from reuseport.policies import (
    MIN_BACKOFF_S,
    MIN_HANG_WINDOW_S,
    MIN_HEALTH_INTERVAL_S,
    BackoffPolicy,
    HealthPolicy,
    RolloutPolicy,
    invalid,
)

MIN_REPLICAS = 1
MAX_REPLICAS = 256
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_RE = re.compile(r"^([a-z_][a-z0-9_-]*|\d+)(:([a-z_][a-z0-9_-]*|\d+))?$")
# Variables the tool sets itself; letting -e override them would break the contract.
_REDACTED_RE = re.compile(r"^sha256:[0-9a-f]{12}$")
RESERVED_ENV = frozenset({"PORT", "REPLICA", "HEALTH_PORT"})
TEMPLATE_FIELDS = ("image", "port", "env", "user", "cpus", "health_port_base")


BALANCES = ("round-robin", "least-conn", "hash")
ENGINES = ("docker", "swarm")
MIN_CPUS = 0.01  # Docker's smallest --cpus (a 1 ms quota per 100 ms period)
# Round-robin where the kernel lets the supervisor steer, else the hash (said once).
DEFAULT_BALANCE = "round-robin"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    image: str
    replicas: int = 2
    port: int = 8080
    env: tuple[tuple[str, str], ...] = ()
    user: str | None = None
    stop_timeout: int = 10
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    metrics_port: int | None = None  # Prometheus /metrics, served by the supervisor
    metrics_addr: str = "127.0.0.1"
    # Which replica a new connection goes to (see reuseport.kernel.steer): the kernel's
    # 4-tuple hash, or an eBPF program over the ready replicas. Not part of the template:
    # changing it restarts nothing.
    balance: str = DEFAULT_BALANCE
    # Each replica's CPU limit in CPUs (docker run --cpus: a CFS quota per 100 ms period),
    # as production containers have; None: no limit.
    cpus: float | None = None
    # Who runs the replicas: this machine's Docker engine under our supervisor, or Docker
    # Swarm (reuseport.swarm) as a host-network service, at most max_per_node per node.
    engine: str = "docker"
    max_per_node: int | None = None

    def __post_init__(self) -> None:
        validate_name(self.name)
        self._check_engine()
        if self.balance not in BALANCES:
            raise invalid("balance", f"must be one of {', '.join(BALANCES)}, got {self.balance!r}")
        if not self.image or any(c.isspace() for c in self.image):
            detail = f"must be an image reference without spaces, got {self.image!r}"
            raise invalid("image", detail, f"invalid image reference {self.image!r}")
        validate_replicas(self.replicas)
        if not 1 <= self.port <= 65535:
            detail = f"must be between 1 and 65535, got {self.port}"
            raise invalid("port", detail, f"port {detail}")
        if self.user is not None and not _USER_RE.match(self.user):
            raise invalid("user", f"must be UID[:GID] or a user name, got {self.user!r}")
        if self.cpus is not None and not self.cpus >= MIN_CPUS:
            raise invalid("cpus", f"must be >= {MIN_CPUS:g}, got {self.cpus:g}")
        if not 0 <= self.stop_timeout <= 3600:
            detail = f"must be 0-3600 seconds, got {self.stop_timeout}"
            raise invalid("stop-timeout", detail, f"stop timeout {detail}")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise invalid("metrics-port", f"must be between 1 and 65535, got {self.metrics_port}")
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise invalid("metrics-port", f"{self.metrics_port} is the service's own port")
        self._check_health_ports()
        for key, _ in self.env:
            if key in RESERVED_ENV:
                raise invalid(
                    "env",
                    f"{key} is reserved: reuseport sets {key} itself",
                    f"-e {key}=... is reserved: reuseport sets {key} itself",
                )

    def _check_engine(self) -> None:
        if self.engine not in ENGINES:
            raise invalid("engine", f"must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.max_per_node is not None:
            if self.engine != "swarm":
                raise invalid("max-per-node", "goes with engine swarm (one machine: no nodes)")
            if not 1 <= self.max_per_node <= MAX_REPLICAS:
                raise invalid(
                    "max-per-node", f"must be between 1 and {MAX_REPLICAS}, got {self.max_per_node}"
                )
        if self.engine == "swarm" and self.health.port_base is not None:
            # Swarm gives every task the same env: no per-replica HEALTH_PORT to check.
            raise invalid(
                "health-port-base",
                "cannot go with engine swarm (tasks share one env); use health-cmd",
            )

    def _check_health_ports(self) -> None:
        ports = self.health.port_range(self.replicas, self.rollout.max_surge)
        if not ports:
            return
        base, top = self.health.port_base, ports[-1]
        if top > 65535:
            raise invalid(
                "health-port-base",
                f"{base} leaves no room: {self.replicas} replicas need "
                f"health ports {ports[0]}-{top}, past 65535",
            )
        for what, taken in (("port", self.port), ("metrics-port", self.metrics_port)):
            if taken is not None and taken in ports:
                raise invalid(
                    what,
                    f"{taken} falls among the health ports {ports[0]}-{top} "
                    f"(--health-port-base {base})",
                )

    def with_replicas(self, replicas: int) -> ServiceSpec:
        return replace(self, replicas=replicas)

    def redacted(self) -> ServiceSpec:
        """This spec with every env value replaced by its digest (``redact_value``): what
        may be shown where secrets must not be (container labels, hence `docker events`).
        Its spec_hash() is not the real spec's; compare redacted with redacted."""
        return replace(self, env=tuple((key, redact_value(value)) for key, value in self.env))

    def replica_env(self, index: int, health_port: int | None = None) -> dict[str, str]:
        env = dict(self.env)
        env["PORT"] = str(self.port)
        env["REPLICA"] = str(index)
        if health_port is not None:
            env["HEALTH_PORT"] = str(health_port)
        return env

    def template(self) -> dict[str, object]:
        template: dict[str, object] = {
            "image": self.image,
            "port": self.port,
            "env": [list(pair) for pair in self.env],
            "user": self.user,
        }
        # Only when set, so specs without them keep the hash they always had.
        if self.cpus is not None:
            template["cpus"] = self.cpus
        if self.health.port_base is not None:
            template["health_port_base"] = self.health.port_base
        return template

    def spec_hash(self) -> str:
        return self._hash

    @functools.cached_property
    def _hash(self) -> str:
        # Cached: the supervisor compares it on every pass, and the spec is frozen.
        blob = json.dumps(self.template(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServiceSpec:
        try:
            data = json.loads(text)
            # Tolerate fields a newer reuseport wrote (a supervisor image may be older).
            known = {f.name for f in fields(cls)}
            data = {key: value for key, value in data.items() if key in known}
            data["env"] = tuple(tuple(pair) for pair in data.get("env", ()))
            data["backoff"] = BackoffPolicy(**_raised_backoff(data.get("backoff", {})))
            data["rollout"] = RolloutPolicy(**data.get("rollout", {}))
            data["health"] = HealthPolicy(**_raised_health(data.get("health", {})))
            return cls(**data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidSpec(f"stored spec is unreadable: {exc}") from exc


# Stored specs (state files, labels, history) may predate the lower bounds: read a value
# below one as the bound itself, so an upgrade never turns a running service unreadable.
def _raised_health(values: dict[str, Any]) -> dict[str, Any]:
    raised = dict(values)
    hang, interval, timeout = (raised.get(k) for k in ("hang_window", "interval", "timeout"))
    if isinstance(hang, int | float) and 0 < hang < MIN_HANG_WINDOW_S:
        raised["hang_window"] = MIN_HANG_WINDOW_S
    if isinstance(interval, int | float) and 0 < interval < MIN_HEALTH_INTERVAL_S:
        raised["interval"] = interval = MIN_HEALTH_INTERVAL_S
    interval = interval if isinstance(interval, int | float) else HealthPolicy.interval
    if isinstance(timeout, int | float) and timeout > interval:
        raised["timeout"] = interval
    return raised


def _raised_backoff(values: dict[str, Any]) -> dict[str, Any]:
    raised = dict(values)
    initial, maximum = raised.get("initial"), raised.get("maximum")
    if isinstance(initial, int | float) and 0 < initial < MIN_BACKOFF_S:
        raised["initial"] = MIN_BACKOFF_S
        if isinstance(maximum, int | float) and maximum < MIN_BACKOFF_S:
            raised["maximum"] = MIN_BACKOFF_S
    return raised


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidSpec(
            f"invalid service name {name!r}: use letters, digits, '_', '.', '-' "
            "(start with a letter or digit, at most 63 characters)"
        )
    return name


def validate_replicas(replicas: int) -> int:
    if not MIN_REPLICAS <= replicas <= MAX_REPLICAS:
        detail = f"must be between {MIN_REPLICAS} and {MAX_REPLICAS}, got {replicas}"
        raise invalid("replicas", detail, f"replicas {detail}")
    return replicas


def is_env_key(key: str) -> bool:
    """Whether ``key`` may name an environment variable: [A-Za-z_][A-Za-z0-9_]*."""
    return _ENV_KEY_RE.match(key) is not None


def parse_env(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Parse ``KEY=VAL`` pairs; later keys override earlier ones like ``docker run -e``."""
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY_RE.match(key):
            raise InvalidSpec(
                f"malformed -e {item!r}: expected KEY=VALUE with KEY like [A-Za-z_][A-Za-z0-9_]*"
            )
        parsed[key] = value
    return tuple(sorted(parsed.items()))


def default_name(image: str) -> str:
    """The service name ``up`` uses without --name: the image's repository name."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    repo = last.split(":", 1)[0]
    return validate_name(repo)


def redact_value(value: str) -> str:
    """``sha256:`` and 12 hex digits of ``value``: equal values stay equal, the value does not
    show. Idempotent (a digest stays as it is), so redacting a redacted spec changes nothing."""
    if _REDACTED_RE.match(value):
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


def differences(running: ServiceSpec, wanted: ServiceSpec) -> list[str]:
    """Human-readable template differences, e.g. ``image: a:1 -> a:2``. Environment
    variables are named, never their values (they may be secrets): ``env DB_PASSWORD
    differs``, ``env MODE added``, ``env DEBUG removed``."""
    old, new = running.template(), wanted.template()
    found = []
    for key in TEMPLATE_FIELDS:
        if key == "env":
            found += _env_differences(dict(running.env), dict(wanted.env))
        elif old.get(key) != new.get(key):
            found.append(f"{key}: {_show(key, old.get(key))} -> {_show(key, new.get(key))}")
    return found


def _env_differences(old: dict[str, str], new: dict[str, str]) -> list[str]:
    changes = {key: "added" for key in new.keys() - old.keys()}
    changes.update({key: "removed" for key in old.keys() - new.keys()})
    changes.update({key: "differs" for key in old.keys() & new.keys() if old[key] != new[key]})
    return [f"env {key} {change}" for key, change in sorted(changes.items())]


def _show(key: str, value: object) -> str:
    if value is None:
        return "(no limit)" if key == "cpus" else "(image default)"
    return str(value)
