"""What the user wants: a frozen, validated description of one service.

``ServiceSpec`` is pure data. Validation lives here and raises :class:`InvalidSpec` with a
one-line message naming the bad value. ``spec_hash`` covers only the container template
(image, port, env, user): changing the replica count or supervision settings never
restarts a replica, while any template change is a different spec.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace

from reuseport.errors import InvalidSpec

MIN_REPLICAS = 1
MAX_REPLICAS = 256
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_RE = re.compile(r"^([a-z_][a-z0-9_-]*|\d+)(:([a-z_][a-z0-9_-]*|\d+))?$")
# Variables the tool sets itself; letting -e override them would break the contract.
RESERVED_ENV = frozenset({"PORT", "REPLICA", "HEALTH_PORT"})
TEMPLATE_FIELDS = ("image", "port", "env", "user", "health_port_base")


@dataclass(frozen=True)
class BackoffPolicy:
    """Crash-loop backoff: the first restart is immediate, later ones wait
    ``initial * 2**(n-2)`` seconds up to ``maximum``; a replica that has listened for
    ``reset_after`` seconds is forgiven its failures."""

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise InvalidSpec(
                f"backoff must satisfy 0 < initial ({self.initial}) <= maximum ({self.maximum})"
            )
        if self.reset_after <= 0:
            raise InvalidSpec(f"backoff reset must be > 0 seconds, got {self.reset_after}")


@dataclass(frozen=True)
class RolloutPolicy:
    """How a template change rolls out: at most ``max_surge`` replicas above the desired
    count, at most ``max_unavailable`` indices without a serving replica, and a new
    replica counts as available once it has listened for ``min_ready_s``."""

    max_surge: int = 1
    max_unavailable: int = 0
    min_ready_s: float = 0.0

    def __post_init__(self) -> None:
        if self.max_surge < 0 or self.max_unavailable < 0:
            raise InvalidSpec("--max-surge and --max-unavailable must be >= 0")
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise InvalidSpec(
                "--max-surge and --max-unavailable cannot both be 0: nothing could move"
            )
        if self.min_ready_s < 0:
            raise InvalidSpec(f"--min-ready must be >= 0, got {self.min_ready_s:g}")


@dataclass(frozen=True)
class HealthPolicy:
    """When a running replica is replaced as not live.

    ``hang_window``: seconds a replica may leave connections in its accept queue without
    taking any before it counts as hung (0 turns the kernel check off). Optionally an
    app-level check per replica: ``GET path`` on its own ``HEALTH_PORT`` (replica i gets
    ``port_base + i``) or ``cmd`` run inside its container, every ``interval`` seconds,
    failing after ``timeout``; ``retries`` failures in a row make the replica unhealthy.
    """

    hang_window: float = 5.0
    port_base: int | None = None
    path: str = "/healthz"
    cmd: str | None = None
    interval: float = 2.0
    timeout: float = 1.0
    retries: int = 3
    # A running replica that has not listened for this long is replaced (under backoff).
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.start_timeout < 1:
            raise InvalidSpec(f"--start-timeout must be >= 1 second, got {self.start_timeout:g}")
        if self.hang_window < 0:
            raise InvalidSpec(f"--hang-window must be >= 0 seconds, got {self.hang_window:g}")
        if self.port_base is not None and not 1 <= self.port_base <= 65535 - 2 * MAX_REPLICAS:
            raise InvalidSpec(
                f"--health-port-base must be between 1 and {65535 - 2 * MAX_REPLICAS}, "
                f"got {self.port_base}"
            )
        if self.port_base is not None and self.cmd is not None:
            raise InvalidSpec("choose one of --health-port-base and --health-cmd")
        if self.cmd is not None and not self.cmd.strip():
            raise InvalidSpec("--health-cmd must not be empty")
        if not self.path.startswith("/"):
            raise InvalidSpec(f"--health-path must start with '/', got {self.path!r}")
        if self.interval <= 0 or self.timeout <= 0:
            raise InvalidSpec("--health-interval and --health-timeout must be > 0 seconds")
        if self.retries < 1:
            raise InvalidSpec(f"--health-retries must be >= 1, got {self.retries}")

    @property
    def app_check(self) -> bool:
        return self.port_base is not None or self.cmd is not None


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

    def __post_init__(self) -> None:
        validate_name(self.name)
        if not self.image or any(c.isspace() for c in self.image):
            raise InvalidSpec(f"invalid image reference {self.image!r}")
        validate_replicas(self.replicas)
        if not 1 <= self.port <= 65535:
            raise InvalidSpec(f"port must be between 1 and 65535, got {self.port}")
        if self.user is not None and not _USER_RE.match(self.user):
            raise InvalidSpec(f"--user must be UID[:GID] or a user name, got {self.user!r}")
        if not 0 <= self.stop_timeout <= 3600:
            raise InvalidSpec(f"stop timeout must be 0-3600 seconds, got {self.stop_timeout}")
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            raise InvalidSpec(
                f"--metrics-port must be between 1 and 65535, got {self.metrics_port}"
            )
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise InvalidSpec(f"--metrics-port {self.metrics_port} is the service's own port")
        base = self.health.port_base
        if base is not None:
            # Replica i gets base + i; successors started beside running replicas take the
            # ports above base + replicas: keep the service's own ports out of that range.
            top = base + 2 * self.replicas + self.rollout.max_surge
            for what, taken in (("--port", self.port), ("--metrics-port", self.metrics_port)):
                if taken is not None and base < taken <= top:
                    raise InvalidSpec(
                        f"{what} {taken} falls among the health ports {base + 1}-{top} "
                        f"(--health-port-base {base})"
                    )
        for key, _ in self.env:
            if key in RESERVED_ENV:
                raise InvalidSpec(f"-e {key}=... is reserved: reuseport sets {key} itself")

    def with_replicas(self, replicas: int) -> ServiceSpec:
        return replace(self, replicas=replicas)

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
        # Only when set, so specs without a health port keep the hash they always had.
        if self.health.port_base is not None:
            template["health_port_base"] = self.health.port_base
        return template

    def spec_hash(self) -> str:
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
            data["backoff"] = BackoffPolicy(**data.get("backoff", {}))
            data["rollout"] = RolloutPolicy(**data.get("rollout", {}))
            data["health"] = HealthPolicy(**data.get("health", {}))
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidSpec(f"stored spec is unreadable: {exc}") from exc


def validate_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidSpec(
            f"invalid service name {name!r}: use letters, digits, '_', '.', '-' "
            "(start with a letter or digit, at most 63 characters)"
        )
    return name


def validate_replicas(replicas: int) -> int:
    if not MIN_REPLICAS <= replicas <= MAX_REPLICAS:
        raise InvalidSpec(
            f"replicas must be between {MIN_REPLICAS} and {MAX_REPLICAS}, got {replicas}"
        )
    return replicas


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


def differences(running: ServiceSpec, wanted: ServiceSpec) -> list[str]:
    """Human-readable template differences, e.g. ``image: a:1 -> a:2``."""
    old, new = running.template(), wanted.template()
    return [
        f"{key}: {_show(old.get(key))} -> {_show(new.get(key))}"
        for key in TEMPLATE_FIELDS
        if old.get(key) != new.get(key)
    ]


def _show(value: object) -> str:
    if value is None:
        return "(image default)"
    if isinstance(value, list):
        return " ".join(f"{k}={v}" for k, v in value) or "(none)"
    return str(value)
