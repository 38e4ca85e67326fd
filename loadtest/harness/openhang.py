"""The figures of one setup in the hang part's open-loop run (``loadtest.hangopen``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtest.harness.jsonable import OMIT_NONE


@dataclass
class OpenSecond:
    """Requests sent in one second (since the SIGSTOP): answered within ``slow_s``, answered
    later, failed."""

    t_s: float = 0.0
    fast: int = 0
    slow: int = 0
    failed: int = 0


@dataclass
class OpenHangFigures:
    """One setup under open-loop load with a SIGSTOPped replica; seconds since the SIGSTOP,
    None when it never happened."""

    description: str = ""
    port: int = 0
    rate: float = 0.0
    requests: int = 0
    ok: int = 0
    slow: int = 0  # answered, but after more than ``slow_s``
    slow_s: float = 1.0
    failures: int = 0
    failures_by_error: dict[str, int] = field(default_factory=dict)
    # The last request sent after the SIGSTOP that failed or was slow: how long new
    # requests kept being hurt. None: none was.
    hurt_until_s: float | None = None
    hurt_later_than_1s: int = 0  # failed or slow requests sent over 1 s after the SIGSTOP
    successor_listening_s: float | None = None
    stopped_listener_gone_s: float | None = None
    stopped_accept_queue_max: int = 0
    per_second: list[OpenSecond] = field(default_factory=list)
    replacements: dict[str, int] | None = field(default=None, metadata=OMIT_NONE)
