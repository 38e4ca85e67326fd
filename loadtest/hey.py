"""hey, the open-loop client of the latency part: run it at a fixed request rate and parse
its summary.

hey's ``-q`` is a rate limit per worker, so ``-c C -q R/C`` offers R requests per second
in total: each worker sends on a ticker, whether or not the server kept up. That only
holds while a response comes back within the ticker's interval (C / R s); a worker whose
response is late skips ticks, which makes it closed-loop again. So every run's achieved
rate is compared with the offered one (``held``), and a run that fell behind says so.
hey prints latencies in whole 0.1 ms (4 decimals of a second).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_RESPONSES = re.compile(r"^\s+\[(\d{3})\]\s+(\d+) responses", re.M)
_ERRORS = re.compile(r"^\s+\[(\d+)\]\s+\S", re.M)
HELD_TOLERANCE = 0.05  # achieved within 5 % of offered: still open-loop


@dataclass(frozen=True)
class HeyResult:
    rps: float  # achieved: answered requests / the run's span, as hey prints it
    p50_ms: float
    p99_ms: float
    responses: int  # with an HTTP status, any
    errors: int  # transport errors + responses other than 2xx/3xx
    duration_s: float


def version() -> str:
    """``hey <Debian version>`` (hey has no version flag)."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True
    )
    return f"hey {out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else "hey"


def parse(output: str) -> HeyResult:
    """Parse hey's summary (the default output, not ``-o csv``)."""

    def grab(pattern: str) -> str:
        match = re.search(pattern, output)
        if not match:
            raise ValueError(f"hey output lacks {pattern!r}:\n{output}")
        return match.group(1)

    statuses = {int(code): int(count) for code, count in _RESPONSES.findall(output)}
    errors = sum(count for code, count in statuses.items() if not 200 <= code < 400)
    _, _, error_part = output.partition("Error distribution:")
    errors += sum(int(count) for count in _ERRORS.findall(error_part))
    return HeyResult(
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=float(grab(r"\s50% in ([\d.]+) secs")) * 1000,
        p99_ms=float(grab(r"\s99% in ([\d.]+) secs")) * 1000,
        responses=sum(statuses.values()),
        errors=errors,
        duration_s=float(grab(r"Total:\s+([\d.]+) secs")),
    )


def held(offered_rps: float, achieved_rps: float, tolerance: float = HELD_TOLERANCE) -> bool:
    """Whether the client kept the offered rate (so the run was open-loop)."""
    return offered_rps > 0 and achieved_rps >= offered_rps * (1 - tolerance)


def command(url: str, rate: float, connections: int, duration_s: float) -> list[str]:
    """hey offering ``rate`` req/s over ``connections`` keep-alive workers for ``duration_s``."""
    if rate <= 0 or connections < 1:
        raise ValueError(f"hey needs a rate > 0 and >= 1 connection, not {rate}, {connections}")
    per_worker = rate / connections
    # -z is a Go duration ("2s", "0.5s"); a worker's first tick comes one interval after
    # its start, so a short run achieves a little less than the offered rate.
    return [
        "hey",
        "-z",
        f"{duration_s:g}s",
        "-c",
        str(connections),
        "-q",
        f"{per_worker:.4f}",
        "-t",
        "5",  # seconds; wrk's timeout in the throughput part
        url,
    ]


def run_hey(url: str, rate: float, connections: int, duration_s: float) -> HeyResult:
    """One hey run; killed rather than left running on any error or interrupt."""
    process = subprocess.Popen(
        command(url, rate, connections, duration_s),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=duration_s + 60)
        if process.returncode != 0:
            raise RuntimeError(f"hey failed ({process.returncode}): {err.strip()[-800:]}")
        return parse(out)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
