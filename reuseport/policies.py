"""How a service is supervised, apart from its template: crash-loop backoff, rollout
pace and liveness (hang window, app-level checks, start timeout). Frozen, validated data;
a bad value raises :class:`InvalidSpec` naming the option (see :func:`invalid`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from reuseport.errors import InvalidSpec

MIN_HANG_WINDOW_S = 1.0
MIN_HEALTH_INTERVAL_S = 0.5
MIN_BACKOFF_S = 0.1
_FLAG_RE = re.compile(r"(?<![\w-])--(?=[a-z])")


def invalid(key: str, detail: str, message: str | None = None) -> InvalidSpec:
    """An InvalidSpec about the option ``key`` (its long flag without dashes): the command
    line shows ``--key detail`` (or ``message``), a project file ``detail`` at the key's
    line, with other options named as the file names them (no dashes)."""
    return InvalidSpec(message or f"--{key} {detail}", key=key, detail=_FLAG_RE.sub("", detail))


@dataclass(frozen=True)
class BackoffPolicy:
    """Crash-loop backoff: the first restart is immediate, later ones wait
    ``initial * 2**(n-2)`` seconds up to ``maximum``; a replica that has listened for
    ``reset_after`` seconds is forgiven its failures."""

    initial: float = 0.5
    maximum: float = 30.0
    reset_after: float = 10.0

    def __post_init__(self) -> None:
        # Below 0.1 s a crash loop turns into a hot loop against the engine.
        if not MIN_BACKOFF_S <= self.initial <= self.maximum:
            raise invalid(
                "backoff-initial",
                f"must be >= {MIN_BACKOFF_S:g} and <= --backoff-max ({self.maximum:g}), "
                f"got {self.initial:g}",
                f"backoff must satisfy {MIN_BACKOFF_S:g} <= --backoff-initial ({self.initial:g}) "
                f"<= --backoff-max ({self.maximum:g})",
            )
        if self.reset_after <= 0:
            detail = f"must be > 0 seconds, got {self.reset_after:g}"
            raise invalid("backoff-reset", detail, f"backoff reset {detail}")


@dataclass(frozen=True)
class RolloutPolicy:
    """How a template change rolls out: at most ``max_surge`` replicas above the desired
    count, at most ``max_unavailable`` indices without a serving replica, and a new
    replica counts as available once it has listened for ``min_ready_s``."""

    max_surge: int = 1
    max_unavailable: int = 0
    min_ready_s: float = 0.0

    def __post_init__(self) -> None:
        both = "--max-surge and --max-unavailable must be >= 0"
        if self.max_surge < 0:
            raise invalid("max-surge", f"must be >= 0, got {self.max_surge}", both)
        if self.max_unavailable < 0:
            raise invalid("max-unavailable", f"must be >= 0, got {self.max_unavailable}", both)
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise invalid(
                "max-surge",
                "cannot be 0 when --max-unavailable is 0: nothing could move",
                "--max-surge and --max-unavailable cannot both be 0: nothing could move",
            )
        if self.min_ready_s < 0:
            raise invalid("min-ready", f"must be >= 0, got {self.min_ready_s:g}")


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
    # A running replica that has not listened for this long is replaced (under backoff);
    # its failed health checks count only after this long, until it has passed one.
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.start_timeout < 1:
            raise invalid("start-timeout", f"must be >= 1 second, got {self.start_timeout:g}")
        # A window under a second calls a replica hung between two kernel readings.
        if self.hang_window != 0 and not self.hang_window >= MIN_HANG_WINDOW_S:
            raise invalid(
                "hang-window",
                f"must be 0 (off) or >= {MIN_HANG_WINDOW_S:g} second, got {self.hang_window:g}",
            )
        if self.port_base is not None and not 1 <= self.port_base <= 65534:
            raise invalid("health-port-base", f"must be between 1 and 65534, got {self.port_base}")
        if self.port_base is not None and self.cmd is not None:
            raise invalid(
                "health-cmd",
                "cannot be set with --health-port-base: choose one",
                "choose one of --health-port-base and --health-cmd",
            )
        if self.cmd is not None and not self.cmd.strip():
            raise invalid("health-cmd", "must not be empty")
        if not self.path.startswith("/"):
            raise invalid("health-path", f"must start with '/', got {self.path!r}")
        if not self.interval >= MIN_HEALTH_INTERVAL_S:
            raise invalid(
                "health-interval",
                f"must be >= {MIN_HEALTH_INTERVAL_S:g} seconds, got {self.interval:g}",
            )
        # A check still running when the next is due would only pile up behind itself.
        if not 0 < self.timeout <= self.interval:
            raise invalid(
                "health-timeout",
                f"must be > 0 and <= --health-interval ({self.interval:g}), got {self.timeout:g}",
            )
        if self.retries < 1:
            raise invalid("health-retries", f"must be >= 1, got {self.retries}")

    @property
    def app_check(self) -> bool:
        return self.port_base is not None or self.cmd is not None

    def port_range(self, replicas: int, max_surge: int) -> range:
        """Every HEALTH_PORT replicas may get: ``base + i`` for each index, plus one for a
        successor started beside each replica (replace before stop) and the rollout surge.
        Empty without a health port."""
        if self.port_base is None:
            return range(0)
        return range(self.port_base + 1, self.port_base + 2 * replicas + max_surge + 1)
