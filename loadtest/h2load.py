"""h2load (nghttp2), the open-loop client of the latency part: every connection sends at a
fixed rate; the latencies come from its per-request log (microseconds).

``-c C --rps R/C`` offers R requests per second in total: each connection's timer adds
requests to send whether or not the server kept up. Over HTTP/1.1 a connection carries
one request at a time, so a request due while its connection still waits for a response
is sent when that response is in, and its latency counts from that send: at a rate the
setup cannot serve, the achieved rate drops below the offered one. So every run's
achieved rate is compared with the offered one (``held``): a run that fell behind was not
open loop and says so. Connections open during ``--warm-up-time`` (not logged), so the
measured requests never pay a connect. (hey, the first choice, could not hold half of
nginx's maximum on a 2-core machine: its Go client needs more CPU than the servers.)
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

Number = TypeVar("Number", int, float)
HELD_TOLERANCE = 0.05  # achieved within 5 % of offered: still open loop
WARMUP_S = 1.0


@dataclass(frozen=True)
class ClientResult:
    rps: float  # achieved: requests started in the measured span / the span
    p50_ms: float
    p99_ms: float
    responses: int  # logged: with an HTTP status
    errors: int  # requests that failed + responses other than 2xx/3xx
    duration_s: float


def version() -> str:
    """``h2load nghttp2/<version>`` as h2load prints it."""
    out = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
    return out.stdout.strip() or "h2load"


def percentile(sorted_values: Sequence[Number], fraction: float) -> Number:
    """Nearest-rank percentile of an ascending list (``fraction`` 0.99 for p99)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def parse(log: str, summary: str, duration_s: float) -> ClientResult:
    """The log (start µs since epoch, status, µs to the end of the response; tab-separated)
    and h2load's printed summary (for requests that never got a response)."""
    durations: list[int] = []
    bad_status = 0
    for line in log.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        status, micros = int(fields[1]), int(fields[2])
        durations.append(micros)
        bad_status += not 200 <= status < 400
    if not durations:
        raise ValueError(f"h2load logged no request:\n{summary}")
    failed = re.search(r"requests: .*?(\d+) failed", summary)
    if failed is None:
        raise ValueError(f"h2load output lacks its requests line:\n{summary}")
    durations.sort()
    return ClientResult(
        rps=len(durations) / duration_s,
        p50_ms=percentile(durations, 0.50) / 1000,
        p99_ms=percentile(durations, 0.99) / 1000,
        responses=len(durations),
        errors=int(failed.group(1)) + bad_status,
        duration_s=duration_s,
    )


def held(offered_rps: float, achieved_rps: float, tolerance: float = HELD_TOLERANCE) -> bool:
    """Whether the client kept the offered rate (so the run was open loop)."""
    return offered_rps > 0 and achieved_rps >= offered_rps * (1 - tolerance)


def command(
    url: str, rate: float, connections: int, duration_s: float, log_file: Path
) -> list[str]:
    """h2load offering ``rate`` req/s over ``connections`` HTTP/1.1 keep-alive connections
    for ``duration_s`` after a warm-up, one thread (the servers need the other core)."""
    if rate <= 0 or connections < 1:
        raise ValueError(f"h2load needs a rate > 0 and >= 1 connection, not {rate}, {connections}")
    return [
        "h2load",
        "--h1",
        "-c",
        str(connections),
        "-t",
        "1",
        "--rps",
        f"{rate / connections:.4f}",
        "-D",
        f"{duration_s:g}",
        "--warm-up-time",
        f"{WARMUP_S:g}",
        "--log-file",
        str(log_file),
        url,
    ]


def run_h2load(url: str, rate: float, connections: int, duration_s: float) -> ClientResult:
    """One h2load run; killed rather than left running on any error or interrupt."""
    with tempfile.TemporaryDirectory(prefix="reuseport-h2load-") as work:
        log_file = Path(work) / "requests.tsv"
        process = subprocess.Popen(
            command(url, rate, connections, duration_s, log_file),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = process.communicate(timeout=duration_s + WARMUP_S + 60)
            if process.returncode != 0:
                raise RuntimeError(f"h2load failed ({process.returncode}): {err.strip()[-800:]}")
            return parse(log_file.read_text(), out, duration_s)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
