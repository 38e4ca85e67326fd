"""Turn the benchmark's measurements into results.json, results.md and PNG charts.

Every number written here comes from the measurements (``LoadtestResults``); nothing is
typed in. The acceptance expectations are evaluated as "checks" and reported (met / short),
never used to alter a measurement. The charts are drawn by ``loadtest.charts``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtest import (
    balancereport,
    charts,
    faultreport,
    latencyreport,
    openhangreport,
    overloadreport,
    steerreport,
)
from loadtest.costreport import cost_lines, startup_line
from loadtest.harness.results import (
    SETUP_ORDER,
    CostResult,
    HangFigures,
    HangResult,
    LoadtestResults,
    SetupFigures,
)

README_START = "<!-- loadtest:start -->"
README_END = "<!-- loadtest:end -->"


@dataclass(frozen=True)
class Check:
    name: str
    met: bool
    detail: str


def setups_of(results: LoadtestResults) -> dict[str, SetupFigures]:
    return results.throughput.setups if results.throughput else {}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def ratios(results: LoadtestResults) -> dict[str, dict[str, float | None]]:
    """reuseport's req/s and p99 divided by each setup's (2.8 = reuseport serves 2.8x)."""
    setups = setups_of(results)
    ours = setups.get("reuseport", SetupFigures())
    return {
        name: {
            "rps": _ratio(ours.rps, figures.rps),
            "p99": _ratio(ours.p99_ms, figures.p99_ms),
        }
        for name, figures in setups.items()
    }


def checks(results: LoadtestResults) -> list[Check]:
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
    chaos = results.chaos
    if chaos:
        other = chaos.failures_other
        found.append(
            Check(
                "chaos: failures other than in flight on killed replicas",
                other == 0,
                f"{other} other, {chaos.failures_in_flight_on_killed} in flight",
            )
        )
        ours = chaos.replacement_ms.median
        docker = chaos.docker_policy_ms.median
        if ours is not None and docker is not None:
            found.append(
                Check(
                    "chaos: replacement median vs Docker restart policy",
                    ours <= docker,
                    f"{ours:.0f} ms vs {docker:.0f} ms",
                )
            )
    for run in results.rollout.runs if results.rollout else []:
        if run.tcp_migrate_req == 1:
            found.append(
                Check(
                    f"rollout under load ({run.clients} clients, "
                    "tcp_migrate_req=1): no failed request",
                    run.failures == 0 and run.rollout_ok,
                    f"{run.failures} failed of {run.requests}",
                )
            )
    found += [Check(*check) for check in overloadreport.checks(results.rollout)]
    if results.hang:
        found += _hang_checks(results.hang)
    found += [Check(*check) for check in steerreport.checks(results)]
    if results.faults:
        found += [Check(*check) for check in faultreport.checks(results.faults)]
    if results.cost:
        found += _cost_checks(results.cost)
    if results.latency:
        found += [Check(*check) for check in latencyreport.checks(results.latency)]
    return found


def _cost_checks(cost: CostResult) -> list[Check]:
    found: list[Check] = []
    at = next((f for f in cost.idle if f.replicas == cost.cpu_target_replicas), None)
    if at is not None:
        found.append(
            Check(
                f"cost: idle supervisor CPU at {at.replicas} replicas",
                at.cpu_percent <= cost.cpu_target_percent,
                f"{at.cpu_percent:.2f} % of a core (expected <= {cost.cpu_target_percent:g} %)",
            )
        )
    if cost.idle:
        rss = max(f.rss_mb for f in cost.idle)
        found.append(
            Check(
                "cost: idle supervisor RSS",
                rss <= cost.rss_target_mb,
                f"at most {rss:.1f} MiB (expected <= {cost.rss_target_mb:g} MB)",
            )
        )
    ratio = cost.startup.ratio if cost.startup else None
    if ratio is not None:
        found.append(
            Check(
                "cost: `up -d` vs parallel `docker run` to all listening",
                ratio <= cost.startup_target_ratio,
                f"{ratio:.2f}x (expected <= {cost.startup_target_ratio:g}x)",
            )
        )
    return found


HANG_SETUPS = ("reuseport", "steered", "docker")  # the hang table's rows, in this order
HANG_MARGIN_S = 3.0  # start-up of the successor and the poll, on top of the hang window


def _hang_checks(hang: HangResult) -> list[Check]:
    ours = hang.setups.get("reuseport")
    docker = hang.setups.get("docker")
    found: list[Check] = []
    if ours and docker:
        found.append(
            Check(
                "hang: reuseport failed requests < Docker HEALTHCHECK + restart always",
                ours.failures < docker.failures,
                f"{ours.failures} vs {docker.failures}",
            )
        )
    if ours:
        bound = (hang.hang_window_s or 0) + HANG_MARGIN_S
        successor, gone = ours.successor_listening_s, ours.stopped_listener_gone_s
        found.append(
            Check(
                "hang: reuseport replaced the stopped replica within its hang window "
                f"+ {HANG_MARGIN_S:g} s",
                successor is not None and gone is not None and max(successor, gone) <= bound,
                f"successor listening after {_secs(successor)}, stopped listener gone after "
                f"{_secs(gone)} (expected <= {bound:g} s)",
            )
        )
    if docker:
        replaced = docker.successor_listening_s
        restarts = docker.restart_count
        found.append(
            Check(
                "hang: Docker never replaced the stopped container (moby#28400)",
                replaced is None and not restarts,
                (
                    "no new listener"
                    if replaced is None
                    else f"a new listener after {replaced:.2f} s"
                )
                + f", RestartCount {_fmt(restarts)}, marked unhealthy after "
                f"{_secs(docker.unhealthy_s)}",
            )
        )
    return found


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _short_error(key: str) -> str:
    """geventhttpclient wraps the cause: RetriesExceeded('url', 0, original=timed out)."""
    match = re.search(r"original=(.*)\)$", key)
    return match.group(1) if match else key


def _hang_lines(hang: HangResult) -> list[str]:
    if hang.skipped:
        return ["", f"Hung replica: skipped ({hang.skipped})."]
    figures = hang.setups
    if not figures:
        return []
    health = hang.health
    restored = "restored after" if hang.tcp_migrate_req_restored else "NOT restored"
    lines = [
        "",
        f"Hung replica: SIGSTOP of replica {hang.stopped_replica} of "
        f"{hang.replicas} under locust load ({hang.users} users, "
        f"{_fmt(hang.duration_s)} s of load after the SIGSTOP, locust network timeout "
        f"{_fmt(hang.network_timeout_s)} s), each setup alone on the machine; "
        f"net.ipv4.tcp_migrate_req={hang.tcp_migrate_req} for this part (was "
        f"{hang.tcp_migrate_req_before}, {restored}):",
        "",
        "| setup | successor listening | hung listener gone | marked unhealthy | requests ok "
        "| slow > 1 s | failed | lowest ok/s after ÷ median before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "reuseport": f"reuseport: `up -d --balance hash`, --hang-window {_fmt(hang.hang_window_s)} s "
        f"(default), --stop-timeout {hang.stop_timeout_s}",
        "steered": "steered: the same with --balance round-robin (the default)",
        "docker": f"Docker: --restart always + HEALTHCHECK (every "
        f"{_fmt(health.interval_s)} s, {_fmt(health.retries)} retries)",
    }
    for name in HANG_SETUPS:
        fig = figures.get(name)
        if not fig:
            continue
        unhealthy = "n/a" if name != "docker" else _secs(fig.unhealthy_s)
        lines.append(
            f"| {labels[name]} | {_secs(fig.successor_listening_s)} | "
            f"{_secs(fig.stopped_listener_gone_s)} | {unhealthy} | "
            f"{_fmt(fig.ok)} | {_fmt(fig.slow)} | {_fmt(fig.failures)} | "
            f"{_fmt(steerreport.dip(fig.throughput), 2)} |"
        )
    errors = []
    for name in HANG_SETUPS:
        by_error = figures.get(name, HangFigures()).failures_by_error
        if by_error:
            spread = ", ".join(
                f"{count} {_short_error(key)}"
                for key, count in sorted(by_error.items(), key=lambda kv: -kv[1])
            )
            errors.append(f"{name} {spread}")
    if errors:
        lines += ["", "Failed requests by error: " + "; ".join(errors) + "."]
    return lines


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(results: LoadtestResults) -> str:
    machine = results.machine
    tp = results.throughput
    lines = [
        f"Measured {machine.date} on {machine.cores if machine.cores is not None else '?'} "
        f"cores, kernel {machine.kernel}, Docker {machine.docker}"
        + (" (SMOKE run: figures are not meaningful)" if results.smoke else "")
        + f", with `{results.command}`"
        + (
            f"; {', '.join(results.carried_over)} carried over from the run of "
            f"{results.carried_from}."
            if results.carried_over
            else "."
        ),
        "",
    ]
    if tp:
        lines += [
            f"{tp.replicas} replicas of {results.workload}, {tp.tool} with "
            f"{tp.connections} keep-alive connections for {tp.duration_s} s, "
            f"median of {tp.repeats} alternating runs:",
            "",
            "| setup | req/s | p50 ms | p99 ms | errors | reuseport ÷ setup, req/s | reuseport ÷ setup, p99 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        ratio = ratios(results)
        setups = tp.setups
        for name in [n for n in SETUP_ORDER if n in setups] + sorted(
            set(setups) - set(SETUP_ORDER)
        ):
            fig = setups[name]
            lines.append(
                f"| {name}: {fig.description} | {_fmt(fig.rps)} | "
                f"{_fmt(fig.p50_ms, 2)} | {_fmt(fig.p99_ms, 2)} | {fig.errors} | "
                f"{_fmt(ratio[name]['rps'], 2)} | {_fmt(ratio[name]['p99'], 2)} |"
            )
        spreads = []
        for name in [n for n in SETUP_ORDER if n in setups]:
            rates = [r.rps for r in setups[name].runs if r.rps]
            if len(rates) > 1:
                spreads.append(f"{name} {min(rates):,.0f}-{max(rates):,.0f}")
        if spreads:
            lines += [
                "",
                "Run-to-run range of req/s (this 2-core machine also runs wrk): "
                + "; ".join(spreads)
                + ".",
            ]
        lines += steerreport.share_lines(tp.shares)
        lines += steerreport.slow_mix_lines(tp.slow_mix)
        lines += balancereport.lines(tp.steer_cost, tp.balance)
    if results.latency:
        lines += latencyreport.lines(results.latency)
    chaos = results.chaos
    if chaos:
        rep, dock = chaos.replacement_ms, chaos.docker_policy_ms
        lines += [
            "",
            f"Chaos: {len(chaos.kills)} kills in {chaos.duration_s} s under locust load "
            f"({chaos.users} users): {chaos.requests:,} requests, "
            f"{chaos.failures} failed ({chaos.failures_in_flight_on_killed} in flight on "
            f"killed replicas, {chaos.failures_other} other). Death to replacement listening: "
            f"median {_fmt(rep.median)} ms, max {_fmt(rep.max)} ms; Docker's restart "
            f"policy on the same image: median {_fmt(dock.median)} ms, max {_fmt(dock.max)} ms.",
        ]
    rollout = results.rollout
    if rollout and rollout.runs:
        lines += [
            "",
            f"Rollout {rollout.from_image} -> {rollout.to_image} of {rollout.replicas} replicas under locust load ({rollout.users} users, max-surge 1, min-ready {rollout.min_ready_s} s):",
            "",
        ]
        for run in rollout.runs:
            lines.append(
                f"- {run.clients} clients, net.ipv4.tcp_migrate_req={run.tcp_migrate_req}: {run.failures} failed of {run.requests:,} requests, "
                f"{'completed' if run.rollout_ok else 'FAILED'} in {_fmt(run.rollout_s, 1)} s, running replicas between {run.running_min} and {run.running_max}"
            )
    if rollout:
        lines += overloadreport.lines(rollout)
    scale = results.scaleout
    if scale:
        lines += ["", "Scale-out: " + startup_line(scale) + "."]
    if results.hang:
        lines += _hang_lines(results.hang) + openhangreport.lines(results.hang)
    if results.faults:
        lines += faultreport.lines(results.faults)
    if results.cost:
        lines += cost_lines(results.cost)
    found = checks(results)
    if found:
        lines += ["", "Expectations:", ""]
        lines += [f"- {'met' if c.met else 'SHORT'}: {c.name}: {c.detail}" for c in found]
    return "\n".join(lines) + "\n"


def write(results: LoadtestResults, out_dir: Path) -> list[Path]:
    """results.json (the measurements with their ratios and checks), results.md, charts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        **results.to_json(),
        "ratios": ratios(results),
        "checks": [asdict(c) for c in checks(results)],
    }
    if results.latency:
        data["latency_ratios"] = latencyreport.ratios(results.latency)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path = out_dir / "results.md"
    md_path.write_text(markdown(results))
    return [json_path, md_path, *charts.draw(results, out_dir)]


def update_readme(readme: Path, table: str) -> None:
    """Replace the block between the loadtest markers with the latest table."""
    text = readme.read_text()
    block = f"{README_START}\n{table}{README_END}"
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if pattern.search(text) is None:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block")
    readme.write_text(pattern.sub(lambda _: block, text))
