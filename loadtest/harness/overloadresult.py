"""The rollout-under-overload rows (``loadtest.overload``): one per ``--balance`` policy."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OverloadRun:
    """A rollout while wrk opens a new connection per request; ``failures`` is the sum of
    wrk's socket errors (connect, read, write, timeout) and its non-2xx/3xx responses."""

    balance: str = ""
    tcp_migrate_req: int = 0
    rollout_ok: bool = False
    rollout_s: float = 0.0
    requests: int = 0
    rps: float = 0.0
    failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout/non_2xx
