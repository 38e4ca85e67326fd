"""The report's rows of ``loadtest.steercost`` (what steering costs, paired runs) and
``loadtest.balanced`` (replicas with a CPU quota, few long-lived connections): pure
functions of ``ThroughputResult``; checks are ``(name, met, detail)`` tuples. The balance
rows' latencies count from each request's scheduled send time (``loadtest.balanced``)."""

from __future__ import annotations

import statistics

from loadtest.harness.steerfigures import BalanceResult, SteerCostResult

HASH, STEERED = "reuseport", "steered"
RPS_MIN = 0.97  # steered req/s over hash req/s at saturation (median of paired ratios)
P99_MAX = 1.1  # steered p99 over hash p99, the same
BALANCE_RPS_MIN = 1.05  # where balance matters, steered must deliver more ...
BALANCE_P99_MAX = 1.0  # ... at a p99 no worse

CheckTuple = tuple[str, bool, str]


def paired_ratios(cost: SteerCostResult, metric: str) -> list[float]:
    """steered/hash of ``metric`` ("rps", "p99_ms") for each pair of runs."""
    hashed, steered = cost.runs.get(HASH, []), cost.runs.get(STEERED, [])
    return [
        getattr(s, metric) / getattr(h, metric)
        for h, s in zip(hashed, steered, strict=False)
        if getattr(h, metric)
    ]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def cost_checks(cost: SteerCostResult) -> list[CheckTuple]:
    rps, p99 = _median(paired_ratios(cost, "rps")), _median(paired_ratios(cost, "p99_ms"))
    if rps is None or p99 is None:
        return []
    of = f"median of {len(paired_ratios(cost, 'rps'))} paired ratios"
    return [
        ("steered req/s vs hash", rps >= RPS_MIN, f"{rps:.3f} ({of}; expected >= {RPS_MIN:g})"),
        ("steered p99 vs hash", p99 <= P99_MAX, f"{p99:.3f} ({of}; expected <= {P99_MAX:g})"),
    ]


def balance_medians(balance: BalanceResult, name: str) -> tuple[float, float] | None:
    runs = balance.runs.get(name, [])
    if not runs:
        return None
    return statistics.median(r.rps for r in runs), statistics.median(r.p99_ms for r in runs)


def balance_checks(balance: BalanceResult) -> list[CheckTuple]:
    hashed, steered = balance_medians(balance, HASH), balance_medians(balance, STEERED)
    if not hashed or not steered or not hashed[0] or not hashed[1]:
        return []
    rps, p99 = steered[0] / hashed[0], steered[1] / hashed[1]
    where = f"{balance.connections} connections, --cpus {balance.cpus:g} replicas"
    return [
        (
            f"balance matters ({where}): steered req/s vs hash",
            rps >= BALANCE_RPS_MIN,
            f"{rps:.2f} (expected >= {BALANCE_RPS_MIN:g})",
        ),
        (
            f"balance matters ({where}): steered p99 vs hash",
            p99 <= BALANCE_P99_MAX,
            f"{p99:.2f} (expected <= {BALANCE_P99_MAX:g})",
        ),
    ]


def lines(cost: SteerCostResult | None, balance: BalanceResult | None) -> list[str]:
    found: list[str] = []
    if cost and cost.runs:
        found += [
            "",
            f"Steering cost at saturation: hash and steered alone, {cost.connections} wrk "
            f"keep-alive connections, {cost.pairs} pairs of {cost.duration_s:g}-s runs "
            "next to each other (alternating which goes first); each pair's steered/hash:",
            "",
            "| pair | hash req/s | steered req/s | req/s ratio | p99 ratio | supervisor "
            "% of a core (hash, steered) |",
            "|---:|---:|---:|---:|---:|---|",
        ]
        rps, p99 = paired_ratios(cost, "rps"), paired_ratios(cost, "p99_ms")
        cpu_h, cpu_s = cost.supervisor_cpu.get(HASH, []), cost.supervisor_cpu.get(STEERED, [])
        for i, (h, s) in enumerate(zip(cost.runs[HASH], cost.runs.get(STEERED, []), strict=False)):
            cpu = f"{cpu_h[i]:.2f}, {cpu_s[i]:.2f}" if i < min(len(cpu_h), len(cpu_s)) else "-"
            found.append(
                f"| {i + 1} | {h.rps:,.0f} | {s.rps:,.0f} | {rps[i]:.3f} | {p99[i]:.3f} | {cpu} |"
            )
    if balance and balance.runs:
        found += [
            "",
            f"Where balance matters: {balance.replicas} replicas each with `--cpus "
            f"{balance.cpus:g}`, {balance.connections} long-lived keep-alive connections (open "
            f"loop, one request at a time each) offering {balance.offered_rps:,.0f} req/s in "
            f"all ({balance.load:g} of the closed-loop {balance.capacity_rps:,.0f}), "
            f"{balance.duration_s:g}-s runs, alternating, medians. Latency from the scheduled "
            "send time (coordinated omission corrected): a request its connection could not "
            "send by the run's end is not served and counts with the run's end minus its "
            "scheduled time.",
            "",
            "| --balance | delivered req/s | % of offered | p50 ms | p99 ms | not served "
            "| req/s ÷ hash | p99 ÷ hash |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base = balance_medians(balance, HASH)
        for name, label in ((HASH, "hash"), (STEERED, "round-robin")):
            fig, runs = balance_medians(balance, name), balance.runs.get(name, [])
            if fig and base and runs:
                p50 = statistics.median(r.p50_ms for r in runs)
                unserved = statistics.median(r.not_sent + r.errors for r in runs)
                share = 100 * fig[0] / balance.offered_rps if balance.offered_rps else 0.0
                found.append(
                    f"| {label} | {fig[0]:,.0f} | {share:.0f} % | {p50:.2f} | {fig[1]:.2f} | "
                    f"{unserved:,.0f} | {fig[0] / base[0]:.2f} | {fig[1] / base[1]:.2f} |"
                )
    return found
