"""The latency part's lines in results.md (the README table), its ratios and checks."""

from __future__ import annotations

from loadtest.harness.results import LatencyResult, OpenLoopFigures, RateStep

OURS = "reuseport"
# The setups the part compares, in the order shown ("steered": eBPF round-robin).
SHOWN = ("reuseport", "steered", "nginx", "haproxy")


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _pct(fraction: float) -> str:
    return f"{fraction:.0%}"


def ratios(latency: LatencyResult) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per rate ("25%") and setup: its p50 and p99 divided by the proxy's (0.8 = 20 % lower)."""
    found: dict[str, dict[str, dict[str, float | None]]] = {}
    for step in latency.steps:
        proxy = step.setups.get(latency.proxy, OpenLoopFigures())
        found[_pct(step.fraction)] = {
            name: {
                "p50": _ratio(fig.p50_ms, proxy.p50_ms),
                "p99": _ratio(fig.p99_ms, proxy.p99_ms),
            }
            for name, fig in step.setups.items()
        }
    return found


def _behind(latency: LatencyResult) -> list[tuple[RateStep, str]]:
    return [(step, name) for step in latency.steps for name, f in step.setups.items() if not f.held]


def checks(latency: LatencyResult) -> list[tuple[str, bool, str]]:
    """(name, met, detail): reuseport's p99 at most the proxy's at every rate, and whether
    the client held every offered rate (else those runs were not open loop)."""
    found: list[tuple[str, bool, str]] = []
    per_rate = [(pct, by.get(OURS, {}).get("p99")) for pct, by in ratios(latency).items()]
    measured = [(pct, value) for pct, value in per_rate if value is not None]
    if measured:
        found.append(
            (
                f"latency at equal offered load: {OURS} p99 <= {latency.proxy} at every rate",
                all(value <= 1 for _, value in measured),
                ", ".join(f"{pct}: {value:.2f}" for pct, value in measured)
                + " (expected <= 1 each)",
            )
        )
    runs = sum(len(step.setups) for step in latency.steps)
    if runs:
        behind = _behind(latency)
        found.append(
            (
                "latency: h2load held every offered rate (open loop)",
                not behind,
                f"{runs - len(behind)} of {runs} runs within {latency.tolerance:.0%} of offered",
            )
        )
    return found


def lines(latency: LatencyResult) -> list[str]:
    if not latency.steps:
        return []
    proxy = latency.proxy
    found = [
        "",
        f"Latency at equal offered load (open loop): {latency.tool}, {latency.connections} "
        f"HTTP/1.1 keep-alive connections (`-c {latency.connections} --rps "
        f"rate/{latency.connections}`, after a warm-up), "
        f"{_fmt(latency.duration_s, 1)} s per setup per rate, each setup alone on the machine; "
        f"offered rates are fractions of {proxy}'s maximum of "
        f"{_fmt(latency.proxy_max_rps)} req/s ({latency.proxy_max_source}):",
        "",
        f"| offered | setup | achieved req/s | p50 ms | p99 ms | errors | p50 ÷ {proxy} "
        f"| p99 ÷ {proxy} |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratio = ratios(latency)
    for step in latency.steps:
        pct = _pct(step.fraction)
        shown = [n for n in SHOWN if n in step.setups]
        for name in shown + sorted(set(step.setups) - set(shown)):
            fig = step.setups[name]
            mark = "" if fig.held else " (behind)"
            found.append(
                f"| {pct} = {_fmt(step.offered_rps)} req/s | {name}: "
                f"{latency.descriptions.get(name, '')} | {_fmt(fig.achieved_rps)}{mark} | "
                f"{_fmt(fig.p50_ms, 2)} | {_fmt(fig.p99_ms, 2)} | {fig.errors} | "
                f"{_fmt(ratio[pct][name]['p50'], 2)} | {_fmt(ratio[pct][name]['p99'], 2)} |"
            )
    behind = _behind(latency)
    if behind:
        spread = ", ".join(f"{name} at {_pct(step.fraction)}" for step, name in behind)
        found += [
            "",
            f"h2load FELL BEHIND (achieved more than {latency.tolerance:.0%} below offered), so "
            f"these runs were closed loop, not open loop: {spread}.",
        ]
    else:
        found += ["", f"h2load held every offered rate within {latency.tolerance:.0%}."]
    return found
