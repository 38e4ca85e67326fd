"""The one schema of a service's options, shared by `reuseport up` and ``reuseport.toml``.

``build_spec`` turns options into a validated :class:`ServiceSpec`; its keyword parameters
are the options (a project file's keys are their names with ``-`` for ``_``), its defaults
are the defaults of both. ``spec_options`` is its inverse: a spec's effective options under
the file's key names. Derived defaults (the health timeout) are decided here only.
"""

from __future__ import annotations

from reuseport.policies import BackoffPolicy, HealthPolicy, RolloutPolicy, invalid
from reuseport.spec import DEFAULT_BALANCE, ServiceSpec, default_name, validate_name

# The defaults `up` shows in --help and a file uses for an absent key.
DEFAULT_READY_TIMEOUT_S = 60.0
DEFAULT_ROLLOUT_TIMEOUT_S = 120.0


def build_spec(
    *,
    image: str,
    name: str | None = None,
    replicas: int = 2,
    port: int = 8080,
    env: tuple[tuple[str, str], ...] = (),
    user: str | None = None,
    cpus: float | None = None,
    stop_timeout: int = 10,
    balance: str = DEFAULT_BALANCE,
    hang_window: float = 5.0,
    start_timeout: float = 60.0,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
    backoff_reset: float = 10.0,
    health_port_base: int | None = None,
    health_path: str = "/healthz",
    health_cmd: str | None = None,
    health_interval: float = 2.0,
    health_timeout: float | None = None,
    health_retries: int = 3,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
    max_surge: int = 1,
    max_unavailable: int = 0,
    min_ready: float = 0.0,
    engine: str = "docker",
    max_per_node: int | None = None,
) -> ServiceSpec:
    """The spec these options describe; :class:`InvalidSpec` (with the option's ``key``)
    for the first bad value. ``env`` is already parsed (``spec.parse_env``): sorted pairs.
    Without ``name`` the service is named after the image's repository."""
    return ServiceSpec(
        name=validate_name(name) if name else default_name(image),
        image=image,
        replicas=replicas,
        port=port,
        env=env,
        user=user,
        cpus=cpus,
        stop_timeout=stop_timeout,
        backoff=BackoffPolicy(backoff_initial, backoff_max, backoff_reset),
        rollout=RolloutPolicy(max_surge, max_unavailable, min_ready),
        health=HealthPolicy(
            hang_window=hang_window,
            port_base=health_port_base,
            path=health_path,
            cmd=health_cmd,
            interval=health_interval,
            # At most the interval: a check may not outlast the next one's start.
            timeout=health_timeout if health_timeout is not None else min(1.0, health_interval),
            retries=health_retries,
            start_timeout=start_timeout,
        ),
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        balance=balance,
        engine=engine,
        max_per_node=max_per_node,
    )


def spec_options(spec: ServiceSpec) -> dict[str, object]:
    """Every option of ``spec`` under its file key (``build_spec``'s parameter with ``-``),
    in ``build_spec``'s order, None for an unset one; ``env`` as a dict. The name is left
    out (a file names a service by its table). ``build_spec(**options)`` gives ``spec``
    back once keys are turned into parameters and env into pairs."""
    health, backoff, rollout = spec.health, spec.backoff, spec.rollout
    return {
        "image": spec.image,
        "replicas": spec.replicas,
        "port": spec.port,
        "env": dict(spec.env),
        "user": spec.user,
        "cpus": spec.cpus,
        "stop-timeout": spec.stop_timeout,
        "balance": spec.balance,
        "hang-window": health.hang_window,
        "start-timeout": health.start_timeout,
        "backoff-initial": backoff.initial,
        "backoff-max": backoff.maximum,
        "backoff-reset": backoff.reset_after,
        "health-port-base": health.port_base,
        "health-path": health.path,
        "health-cmd": health.cmd,
        "health-interval": health.interval,
        "health-timeout": health.timeout,
        "health-retries": health.retries,
        "metrics-port": spec.metrics_port,
        "metrics-addr": spec.metrics_addr,
        "max-surge": rollout.max_surge,
        "max-unavailable": rollout.max_unavailable,
        "min-ready": rollout.min_ready_s,
        "engine": spec.engine,
        "max-per-node": spec.max_per_node,
    }


def positive_seconds(key: str, value: float) -> float:
    """``value`` when > 0: a wait such as --ready-timeout or rollout's --timeout."""
    if not value > 0:
        raise invalid(key, f"must be > 0, got {value:g}")
    return value


__all__ = [
    "DEFAULT_READY_TIMEOUT_S",
    "DEFAULT_ROLLOUT_TIMEOUT_S",
    "build_spec",
    "positive_seconds",
    "spec_options",
]
