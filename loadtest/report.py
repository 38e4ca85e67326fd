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
    found += _hang_checks(results.get("hang") or {})
    return found


HANG_MARGIN_S = 3.0  # start-up of the successor and the poll, on top of the hang window


def _hang_checks(hang: dict[str, Any]) -> list[Check]:
    ours = hang.get("setups", {}).get("reuseport")
    docker = hang.get("setups", {}).get("docker")
    found: list[Check] = []
    if ours and docker:
        found.append(
            Check(
                "hang: reuseport failed requests < Docker HEALTHCHECK + restart always",
                ours["failures"] < docker["failures"],
                f"{ours['failures']} vs {docker['failures']}",
            )
        )
    if ours:
        bound = (hang.get("hang_window_s") or 0) + HANG_MARGIN_S
        successor, gone = ours.get("successor_listening_s"), ours.get("stopped_listener_gone_s")
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
        replaced = docker.get("successor_listening_s")
        restarts = docker.get("restart_count")
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
                f"{_secs(docker.get('unhealthy_s'))}",
            )
        )
    return found


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _short_error(key: str) -> str:
    """geventhttpclient wraps the cause: RetriesExceeded('url', 0, original=timed out)."""
    match = re.search(r"original=(.*)\)$", key)
    return match.group(1) if match else key


def _hang_lines(hang: dict[str, Any]) -> list[str]:
    if hang.get("skipped"):
        return ["", f"Hung replica: skipped ({hang['skipped']})."]
    figures = hang.get("setups", {})
    if not figures:
        return []
    health = hang.get("health", {})
    restored = "restored after" if hang.get("tcp_migrate_req_restored") else "NOT restored"
    lines = [
        "",
        f"Hung replica: SIGSTOP of replica {hang.get('stopped_replica')} of "
        f"{hang.get('replicas')} under locust load ({hang.get('users')} users, "
        f"{_fmt(hang.get('duration_s'))} s of load after the SIGSTOP, locust network timeout "
        f"{_fmt(hang.get('network_timeout_s'))} s), each setup alone on the machine; "
        f"net.ipv4.tcp_migrate_req={hang.get('tcp_migrate_req')} for this part (was "
        f"{hang.get('tcp_migrate_req_before')}, {restored}):",
        "",
        "| setup | successor listening | hung listener gone | marked unhealthy | requests ok "
        "| slow > 1 s | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {
        "reuseport": f"reuseport: `up -d`, --hang-window {_fmt(hang.get('hang_window_s'))} s "
        f"(default), --stop-timeout {hang.get('stop_timeout_s')}",
        "docker": f"Docker: --restart always + HEALTHCHECK (every "
        f"{_fmt(health.get('interval_s'))} s, {_fmt(health.get('retries'))} retries)",
    }
    for name in ("reuseport", "docker"):
        fig = figures.get(name)
        if not fig:
            continue
        unhealthy = "n/a" if name == "reuseport" else _secs(fig.get("unhealthy_s"))
        lines.append(
            f"| {labels[name]} | {_secs(fig.get('successor_listening_s'))} | "
            f"{_secs(fig.get('stopped_listener_gone_s'))} | {unhealthy} | "
            f"{_fmt(fig.get('ok'))} | {_fmt(fig.get('slow'))} | {_fmt(fig.get('failures'))} |"
        )
    errors = []
    for name in ("reuseport", "docker"):
        by_error = (figures.get(name) or {}).get("failures_by_error") or {}
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
    lines += _hang_lines(results.get("hang") or {})
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
    hang = (results.get("hang") or {}).get("setups") or {}
    if any(f.get("throughput") for f in hang.values()):
        fig, axis = plt.subplots(figsize=(11, 4))
        colors = {"reuseport": "tab:blue", "docker": "tab:orange"}
        for name, figures in hang.items():
            points = figures.get("throughput") or []
            color = colors.get(name)
            times = [p["t_s"] for p in points]
            axis.plot(times, [p["ok"] for p in points], color=color, label=f"{name}: ok/s")
            axis.plot(
                times,
                [p["failed"] for p in points],
                color=color,
                linestyle=":",
                label=f"{name}: failed/s",
            )
        axis.axvline(0, color="red", alpha=0.5, linestyle="--", label="SIGSTOP")
        gone = (hang.get("reuseport") or {}).get("stopped_listener_gone_s")
        if gone is not None:
            axis.axvline(
                gone, color="tab:blue", alpha=0.5, linestyle="--", label="reuseport: replaced"
            )
        unhealthy = (hang.get("docker") or {}).get("unhealthy_s")
        if unhealthy is not None:
            axis.axvline(
                unhealthy,
                color="tab:orange",
                alpha=0.5,
                linestyle="--",
                label="docker: marked unhealthy",
            )
        axis.set_xlabel("seconds since the SIGSTOP (each setup its own run)")
        axis.set_ylim(bottom=0)
        axis.set_title("hung replica: throughput, reuseport vs Docker HEALTHCHECK")
        axis.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / "hang.png"
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
