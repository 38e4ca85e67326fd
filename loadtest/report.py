"""Turn the benchmark's measurements into results.json, results.md and PNG charts.

Every number written here comes from the measurements dict; nothing is typed in. The
acceptance expectations are evaluated as "checks" and reported (met / short), never used
to alter a measurement.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README_START = "<!-- loadtest:start -->"
README_END = "<!-- loadtest:end -->"
SETUP_ORDER = ("reuseport", "manual", "nginx", "haproxy", "limit", "single")


@dataclass(frozen=True)
class Check:
    name: str
    met: bool
    detail: str


def _setups(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return results.get("throughput", {}).get("setups", {})


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """reuseport's req/s and p99 divided by each setup's (2.8 = reuseport serves 2.8x)."""
    setups = _setups(results)
    ours = setups.get("reuseport", {})
    return {
        name: {
            "rps": _ratio(ours.get("rps"), figures.get("rps")),
            "p99": _ratio(ours.get("p99_ms"), figures.get("p99_ms")),
        }
        for name, figures in setups.items()
    }


def checks(results: dict[str, Any]) -> list[Check]:
    found: list[Check] = []
    ratio = ratios(results)

    def against(setup: str, key: str, op: str, bound: float, label: str) -> None:
        value = ratio.get(setup, {}).get(key)
        if value is None:
            return
        met = value >= bound if op == ">=" else value <= bound
        found.append(Check(label, met, f"{value:.2f} (expected {op} {bound})"))

    against("nginx", "rps", ">=", 2.5, "reuseport req/s vs nginx")
    against("haproxy", "rps", ">=", 2.3, "reuseport req/s vs HAProxy")
    against("nginx", "p99", "<=", 0.6, "reuseport p99 vs nginx")
    manual = ratio.get("manual", {}).get("rps")
    if manual is not None:
        found.append(
            Check(
                "tool-managed vs hand-started replicas (req/s)",
                abs(manual - 1) <= 0.03,
                f"{manual:.3f} (expected within 3% of 1)",
            )
        )
    chaos = results.get("chaos")
    if chaos:
        other = chaos.get("failures_other", 0)
        found.append(
            Check(
                "chaos: failures other than in flight on killed replicas",
                other == 0,
                f"{other} other, {chaos.get('failures_in_flight_on_killed', 0)} in flight",
            )
        )
        ours = (chaos.get("replacement_ms") or {}).get("median")
        docker = (chaos.get("docker_policy_ms") or {}).get("median")
        if ours is not None and docker is not None:
            found.append(
                Check(
                    "chaos: replacement median vs Docker restart policy",
                    ours <= docker,
                    f"{ours:.0f} ms vs {docker:.0f} ms",
                )
            )
    rollout = results.get("rollout") or {}
    for run in rollout.get("runs", []):
        if run["tcp_migrate_req"] == 1:
            found.append(
                Check(
                    f"rollout under load ({run.get('clients', 'mixed')} clients, "
                    "tcp_migrate_req=1): no failed request",
                    run["failures"] == 0 and run["rollout_ok"],
                    f"{run['failures']} failed of {run['requests']}",
                )
            )
    return found


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    machine = results.get("machine", {})
    tp = results.get("throughput", {})
    lines = [
        f"Measured {machine.get('date', '?')} on {machine.get('cores', '?')} cores, kernel "
        f"{machine.get('kernel', '?')}, Docker {machine.get('docker', '?')}"
        + (" (SMOKE run: figures are not meaningful)" if results.get("smoke") else "")
        + f", with `{results.get('command', '?')}`.",
        "",
    ]
    if tp:
        lines += [
            f"{tp.get('replicas')} replicas of the demo app, {tp.get('tool')} with "
            f"{tp.get('connections')} keep-alive connections for {tp.get('duration_s')} s, "
            f"median of {tp.get('repeats')} alternating runs:",
            "",
            "| setup | req/s | p50 ms | p99 ms | errors | reuseport ÷ setup, req/s | reuseport ÷ setup, p99 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        ratio = ratios(results)
        setups = _setups(results)
        for name in [n for n in SETUP_ORDER if n in setups] + sorted(
            set(setups) - set(SETUP_ORDER)
        ):
            fig = setups[name]
            lines.append(
                f"| {name}: {fig.get('description', '')} | {_fmt(fig.get('rps'))} | "
                f"{_fmt(fig.get('p50_ms'), 2)} | {_fmt(fig.get('p99_ms'), 2)} | {fig.get('errors', 0)} | "
                f"{_fmt(ratio[name]['rps'], 2)} | {_fmt(ratio[name]['p99'], 2)} |"
            )
        spreads = []
        for name in [n for n in SETUP_ORDER if n in setups]:
            rates = [r["rps"] for r in setups[name].get("runs", []) if r.get("rps")]
            if len(rates) > 1:
                spreads.append(f"{name} {min(rates):,.0f}-{max(rates):,.0f}")
        if spreads:
            lines += [
                "",
                "Run-to-run range of req/s (this 2-core machine also runs wrk): "
                + "; ".join(spreads)
                + ".",
            ]
        shares = tp.get("shares", {})
        if shares:
            lines += ["", "Per-replica share of new connections (max/min):", ""]
            for count, per_setup in shares.items():
                for setup, share in per_setup.items():
                    spread = ", ".join(
                        f"{k}: {v}" for k, v in sorted(share.get("per_replica", {}).items())
                    )
                    lines.append(
                        f"- {count} connections, {setup}: max/min {_fmt(share.get('max_over_min'), 2)} ({spread})"
                    )
    chaos = results.get("chaos")
    if chaos:
        rep, dock = chaos.get("replacement_ms") or {}, chaos.get("docker_policy_ms") or {}
        lines += [
            "",
            f"Chaos: {len(chaos.get('kills', []))} kills in {chaos.get('duration_s')} s under locust load "
            f"({chaos.get('users')} users): {chaos.get('requests', 0):,} requests, "
            f"{chaos.get('failures', 0)} failed ({chaos.get('failures_in_flight_on_killed', 0)} in flight on "
            f"killed replicas, {chaos.get('failures_other', 0)} other). Death to replacement listening: "
            f"median {_fmt(rep.get('median'))} ms, max {_fmt(rep.get('max'))} ms; Docker's restart "
            f"policy on the same image: median {_fmt(dock.get('median'))} ms, max {_fmt(dock.get('max'))} ms.",
        ]
    rollout = results.get("rollout")
    if rollout and rollout.get("runs"):
        lines += [
            "",
            f"Rollout {rollout.get('from')} -> {rollout.get('to')} of {rollout.get('replicas')} replicas under locust load ({rollout.get('users')} users, max-surge 1, min-ready {rollout.get('min_ready_s')} s):",
            "",
        ]
        for run in rollout["runs"]:
            lines.append(
                f"- {run.get('clients', 'mixed')} clients, net.ipv4.tcp_migrate_req={run['tcp_migrate_req']}: {run['failures']} failed of {run['requests']:,} requests, "
                f"{'completed' if run['rollout_ok'] else 'FAILED'} in {_fmt(run['rollout_s'], 1)} s, running replicas between {run['running_min']} and {run['running_max']}"
            )
    scale = results.get("scaleout")
    if scale:
        lines += [
            "",
            f"Scale-out: `up --replicas {scale.get('replicas')}` from nothing to all listening "
            f"in {_fmt(scale.get('seconds'), 2)} s.",
        ]
    found = checks(results)
    if found:
        lines += ["", "Expectations:", ""]
        lines += [f"- {'met' if c.met else 'SHORT'}: {c.name}: {c.detail}" for c in found]
    return "\n".join(lines) + "\n"


def charts(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written: list[Path] = []
    setups = _setups(results)
    if setups:
        names = [n for n in SETUP_ORDER if n in setups]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        left.bar(names, [setups[n].get("rps") or 0 for n in names], color="tab:blue")
        left.set_title("requests/s (median)")
        right.bar(names, [setups[n].get("p99_ms") or 0 for n in names], color="tab:orange")
        right.set_title("p99 latency, ms (median)")
        for axis in (left, right):
            axis.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        path = out_dir / "setups.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    chaos = results.get("chaos")
    if chaos and chaos.get("throughput"):
        fig, axis = plt.subplots(figsize=(11, 4))
        points = chaos["throughput"]
        axis.plot([p["t_s"] for p in points], [p["rps"] for p in points], label="requests/s")
        for number, kill in enumerate(chaos.get("kills", [])):
            axis.axvline(
                kill["t_s"],
                color="red",
                alpha=0.5,
                linestyle="--",
                label="replica killed" if number == 0 else None,
            )
        axis.set_xlabel("seconds since load start")
        axis.set_ylim(bottom=0)  # a dip must look like one
        axis.set_title("chaos: throughput while replicas are killed")
        axis.legend()
        fig.tight_layout()
        path = out_dir / "chaos.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write(results: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        **results,
        "ratios": ratios(results),
        "checks": [c.__dict__ for c in checks(results)],
    }
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path = out_dir / "results.md"
    md_path.write_text(markdown(results))
    return [json_path, md_path, *charts(results, out_dir)]


def update_readme(readme: Path, table: str) -> None:
    """Replace the block between the loadtest markers with the latest table."""
    text = readme.read_text()
    block = f"{README_START}\n{table}{README_END}"
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if pattern.search(text) is None:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    readme.write_text(pattern.sub(lambda _: block, text))
