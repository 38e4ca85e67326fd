"""wrk, the load generator for raw throughput (locust cannot saturate these servers on 2
cores): run it and parse its ``--latency`` report."""

from __future__ import annotations

import re
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    duration_s: float


def version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(output: str, duration_s: float) -> WrkResult:
    def grab(pattern: str) -> str:
        match = re.search(pattern, output)
        if not match:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match.group(1)

    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return WrkResult(
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(grab(r"\s50%\s+(\S+)")),
        p99_ms=_ms(grab(r"\s99%\s+(\S+)")),
        errors=errors,
        requests=int(grab(r"(\d+) requests in")),
        duration_s=duration_s,
    )


def run_wrk(
    url: str, connections: int, duration_s: float, threads: int = 2, timeout_s: float = 5
) -> WrkResult:
    threads = max(1, min(threads, connections))
    command = [
        "wrk",
        "--latency",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        f"--timeout={timeout_s:g}s",
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
    return parse(out.stdout, duration_s)


def run_wrk_split(urls: list[str], connections: int, duration_s: float) -> WrkResult:
    """One wrk per URL at once, each with its share of the connections and one thread.

    rps, requests and errors are summed; percentiles cannot be merged from summaries, so
    p50 is the median of the per-process p50s and p99 the worst per-process p99 (an upper
    bound on the true p99)."""
    share = max(1, connections // len(urls))
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        parts = list(pool.map(lambda u: run_wrk(u, share, duration_s, threads=1), urls))
    return WrkResult(
        rps=sum(p.rps for p in parts),
        p50_ms=statistics.median(p.p50_ms for p in parts),
        p99_ms=max(p.p99_ms for p in parts),
        errors=sum(p.errors for p in parts),
        requests=sum(p.requests for p in parts),
        duration_s=duration_s,
    )
