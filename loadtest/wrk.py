"""wrk, the load generator for raw throughput (locust cannot saturate these servers on 2
cores): run it and parse its ``--latency`` report."""

from __future__ import annotations

import re
import signal
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
# wrk parses -d and --timeout as whole numbers ("1.5s" is rejected), so round once here.
_MIN_SECONDS = 1
_UNTIL_INTERRUPTED_S = 3600
ERROR_KINDS = ("connect", "read", "write", "timeout", "non_2xx")


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    duration_s: float


def version() -> str:
    """``wrk <version>`` as wrk prints it (``wrk -v`` exits 1 on Debian, hence no check)."""
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", out.stdout + out.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _seconds(text: str) -> float:
    return _ms(text) / 1000.0


def error_counts(output: str) -> dict[str, int]:
    """wrk's failed requests by kind: its socket errors and non-2xx/3xx responses (a kind
    it does not print is 0)."""
    counts = dict.fromkeys(ERROR_KINDS, 0)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        for kind, number in zip(ERROR_KINDS[:4], socket_errors.groups(), strict=True):
            counts[kind] = int(number)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        counts["non_2xx"] = int(non_2xx.group(1))
    return counts


def parse(output: str) -> WrkResult:
    """Parse wrk's report; errors = socket errors (connect, read, write, timeout) + non-2xx/3xx."""

    def grab(pattern: str) -> str:
        match = re.search(pattern, output)
        if not match:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match.group(1)

    errors = sum(error_counts(output).values())
    return WrkResult(
        rps=float(grab(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(grab(r"\s50%\s+(\S+)")),
        p99_ms=_ms(grab(r"\s99%\s+(\S+)")),
        errors=errors,
        requests=int(grab(r"(\d+) requests in")),
        # The measured span, not the requested one: wrk stops a little late.
        duration_s=_seconds(grab(r"requests in ([\d.]+\w+),")),
    )


def _command(
    url: str,
    connections: int,
    duration_s: float,
    threads: int,
    timeout_s: float,
    connection: str = "keep-alive",
    script: Path | None = None,
) -> list[str]:
    threads = max(1, min(threads, connections))  # wrk refuses fewer connections than threads
    return [
        "wrk",
        "--latency",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(_MIN_SECONDS, round(duration_s))}s",
        f"--timeout={max(_MIN_SECONDS, round(timeout_s))}s",
        # HTTP/1.1 keeps alive anyway; said explicitly so every setup gets the same header.
        "-H",
        f"Connection: {connection}",
        *(["-s", str(script)] if script is not None else []),
        url,
    ]


def _run_all(commands: list[list[str]], duration_s: float) -> list[WrkResult]:
    """Start every wrk at once, collect each report; on any error or interrupt kill them
    all rather than leave load running behind our back."""
    processes: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            processes.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        results = []
        for process in processes:
            # wrk's report is a few hundred bytes: reading the pipes one after the other
            # cannot block a sibling.
            out, err = process.communicate(timeout=duration_s + 60)
            if process.returncode != 0:
                raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip()}")
            results.append(parse(out))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_wrk(
    url: str,
    connections: int,
    duration_s: float,
    threads: int = 2,
    timeout_s: float = 5,
    connection: str = "keep-alive",
    script: Path | None = None,
) -> WrkResult:
    """One wrk run: ``connections`` connections spread over ``threads`` threads;
    ``connection="close"`` makes every request a new TCP connection (accept-heavy);
    ``script``: a wrk Lua script (``-s``) that picks the requests."""
    command = _command(url, connections, duration_s, threads, timeout_s, connection, script)
    return _run_all([command], duration_s)[0]


def start_until_interrupted(
    url: str, connections: int, threads: int, timeout_s: float, connection: str = "keep-alive"
) -> subprocess.Popen[str]:
    """wrk in the background for as long as it takes (``interrupt`` ends it): load that
    spans an operation of unknown length, such as a rollout."""
    command = _command(url, connections, _UNTIL_INTERRUPTED_S, threads, timeout_s, connection)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt(process: subprocess.Popen[str]) -> str:
    """SIGINT to a wrk of ``start_until_interrupted`` (it stops and prints its report, as
    at the end of its duration); its report. Killed if it does not finish."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError("wrk did not stop on SIGINT") from None
    if "requests in" not in out:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.strip()}")
    return out


def run_wrk_split(urls: list[str], connections: int, duration_s: float) -> WrkResult:
    """One wrk per URL at once, each with ``connections / len(urls)`` connections, 1 thread.

    rps, requests and errors are summed. Percentiles cannot be merged from wrk's summaries,
    so this is an approximation: p50 is the median of the per-process p50s, p99 the worst
    per-process p99 (an upper bound of the true p99). Note that N single-threaded wrk
    processes are N schedulable clients where ``run_wrk`` has ``threads``: on a small
    machine shared by client and servers that shifts CPU towards the client.
    """
    share = max(1, connections // len(urls))
    parts = _run_all([_command(u, share, duration_s, 1, 5) for u in urls], duration_s)
    return WrkResult(
        rps=sum(p.rps for p in parts),
        p50_ms=statistics.median(p.p50_ms for p in parts),
        p99_ms=max(p.p99_ms for p in parts),
        errors=sum(p.errors for p in parts),
        requests=sum(p.requests for p in parts),
        duration_s=max(p.duration_s for p in parts),
    )
