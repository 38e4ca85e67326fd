"""The steered rows of the report: eBPF steering (``--balance round-robin``, the tool's
default) against the kernel's 4-tuple hash (``--balance hash``, the "reuseport" setup),
measured in the same run: throughput, the share of new connections, a hung replica.

Pure functions of the measurements (``LoadtestResults``); ``loadtest.report`` prints them.
Checks are ``(name, met, detail)`` tuples, as ``faultreport``'s.
"""

from __future__ import annotations

import statistics

from loadtest import balancereport, openhangreport
from loadtest.harness.results import (
    HangResult,
    HangSecond,
    LoadtestResults,
    ShareFigures,
    SlowMixResult,
)

HASH, STEERED = "reuseport", "steered"
RPS_MIN = 0.97  # steered req/s over hash req/s (medians of alternating repeats)
P99_MAX = 1.1  # steered p99 over hash p99
SHARE_MAX = 1.05  # steered max/min share of new connections, at every count measured
HANG_FAILURES_MAX = 0.25  # steered failed requests over hash's, a hung replica under load

CheckTuple = tuple[str, bool, str]


def _over(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def checks(results: LoadtestResults) -> list[CheckTuple]:
    found: list[CheckTuple] = []
    setups = results.throughput.setups if results.throughput else {}
    ours, hashed = setups.get(STEERED), setups.get(HASH)
    cost = results.throughput.steer_cost if results.throughput else None
    if cost and cost.runs:  # paired runs: the robust figure
        found += balancereport.cost_checks(cost)
    elif ours and hashed:
        rps = _over(ours.rps, hashed.rps)
        if rps is not None:
            found.append(
                (
                    "steered req/s vs hash",
                    rps >= RPS_MIN,
                    f"{rps:.3f} (expected >= {RPS_MIN:g})",
                )
            )
        p99 = _over(ours.p99_ms, hashed.p99_ms)
        if p99 is not None:
            found.append(
                ("steered p99 vs hash", p99 <= P99_MAX, f"{p99:.3f} (expected <= {P99_MAX:g})")
            )
    for count, per_setup in (results.throughput.shares if results.throughput else {}).items():
        share = per_setup.get(STEERED)
        if share is None:
            continue
        spread = share.max_over_min
        found.append(
            (
                f"steered share of new connections at {count} connections (max/min)",
                spread is not None and spread <= SHARE_MAX,
                f"{_ratio_text(spread)} (expected <= {SHARE_MAX:g}; hash "
                f"{_ratio_text(per_setup[HASH].max_over_min) if HASH in per_setup else '-'})",
            )
        )
    if results.throughput and results.throughput.balance:
        found += balancereport.balance_checks(results.throughput.balance)
    if results.hang:
        found += openhangreport.checks(results.hang) or _hang_checks(results.hang)
    return found


def _hang_checks(hang: HangResult) -> list[CheckTuple]:
    ours, hashed = hang.setups.get(STEERED), hang.setups.get(HASH)
    if not ours or not hashed:
        return []
    bound = hashed.failures * HANG_FAILURES_MAX
    return [
        (
            "hang: steered failed requests <= 1/4 of hash's",
            ours.failures <= bound,
            f"{ours.failures} vs {hashed.failures} (expected <= {bound:g})",
        )
    ]


def _ratio_text(value: float | None) -> str:
    """max/min; None means a replica got no new connection at all."""
    return "inf (a replica got none)" if value is None else f"{value:.2f}"


def share_lines(shares: dict[str, dict[str, ShareFigures]]) -> list[str]:
    """One row per connection count, one column per setup measured: max/min (spread)."""
    names: list[str] = []
    for per_setup in shares.values():
        names += [name for name in per_setup if name not in names]
    if not names:
        return []
    lines = [
        "",
        "Per-replica share of new connections, max/min (connections per replica), "
        "all connections open at once:",
        "",
        "| connections | " + " | ".join(_column(name) for name in names) + " |",
        "|---:|" + "---|" * len(names),
    ]
    for count, per_setup in shares.items():
        cells = []
        for name in names:
            share = per_setup.get(name)
            if share is None:
                cells.append("-")
                continue
            spread = ", ".join(f"{k}: {v}" for k, v in sorted(share.per_replica.items()))
            ratio = "-" if share.max_over_min is None else f"{share.max_over_min:.2f}"
            cells.append(f"{ratio} ({spread})")
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    return lines


def slow_mix_lines(mix: SlowMixResult | None) -> list[str]:
    """The slow-request mix by policy, each setup's req/s and p99 also over hash's."""
    if mix is None or not mix.setups:
        return []
    lines = [
        "",
        f"Slow-request mix: every request on a new connection, {mix.slow_fraction:.1%} of "
        f"them `GET /sleep?s={mix.slow_s:g}`, {mix.connections} wrk connections for "
        f"{mix.duration_s:g} s, median of {mix.repeats} alternating runs (no expectation: "
        "what it says):",
        "",
        "| --balance | req/s | p50 ms | p99 ms | errors | req/s ÷ hash | p99 ÷ hash |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    hashed = mix.setups.get(HASH)
    for name, fig in mix.setups.items():
        rps = _over(fig.rps, hashed.rps) if hashed else None
        p99 = _over(fig.p99_ms, hashed.p99_ms) if hashed else None
        lines.append(
            f"| {_POLICIES.get(name, name)} | {_num(fig.rps, 0)} | {_num(fig.p50_ms, 2)} | "
            f"{_num(fig.p99_ms, 2)} | {fig.errors} | {_num(rps, 2)} | {_num(p99, 2)} |"
        )
    return lines


_POLICIES = {HASH: "hash", STEERED: "round-robin", "least-conn": "least-conn"}


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _column(name: str) -> str:
    return {HASH: "reuseport (hash)", STEERED: "steered (round-robin)"}.get(name, name)


def dip(throughput: list[HangSecond]) -> float | None:
    """The throughput dip of a hung replica: the lowest ok/s of a whole second after the
    SIGSTOP over the median ok/s of the whole seconds before it (1.0: no dip); None when
    either side has no second."""
    before = [s.ok for s in throughput if s.t_s + 1 <= 0]
    after = [s.ok for s in throughput if s.t_s >= 0]
    if not before or not after:
        return None
    median = statistics.median(before)
    return round(min(after) / median, 2) if median else None
