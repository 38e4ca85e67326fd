"""The report's PNG charts, drawn only from the measurements (``LoadtestResults``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtest.harness.results import (
    SETUP_ORDER,
    ChaosResult,
    FaultsResult,
    HangResult,
    LoadtestResults,
)


def draw(results: LoadtestResults, out_dir: Path) -> list[Path]:
    """setups.png, chaos.png, hang.png and faults.png, each when its part has figures to draw."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written: list[Path] = []
    setups = results.throughput.setups if results.throughput else {}
    if setups:
        names = [n for n in SETUP_ORDER if n in setups]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        left.bar(names, [setups[n].rps or 0 for n in names], color="tab:blue")
        left.set_title("requests/s (median)")
        right.bar(names, [setups[n].p99_ms or 0 for n in names], color="tab:orange")
        right.set_title("p99 latency, ms (median)")
        for axis in (left, right):
            axis.tick_params(axis="x", rotation=30)
        written.append(_save(plt, fig, out_dir / "setups.png"))
    if results.chaos and results.chaos.throughput:
        written.append(_save(plt, _chaos(plt, results.chaos), out_dir / "chaos.png"))
    if results.hang and any(f.throughput for f in results.hang.setups.values()):
        written.append(_save(plt, _hang(plt, results.hang), out_dir / "hang.png"))
    if results.faults and results.faults.scenarios:
        written.append(_save(plt, _faults(plt, results.faults), out_dir / "faults.png"))
    return written


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _chaos(plt: Any, chaos: ChaosResult) -> Any:
    fig, axis = plt.subplots(figsize=(11, 4))
    points = chaos.throughput
    axis.plot([p.t_s for p in points], [p.rps for p in points], label="requests/s")
    for number, kill in enumerate(chaos.kills):
        axis.axvline(
            kill.t_s,
            color="red",
            alpha=0.5,
            linestyle="--",
            label="replica killed" if number == 0 else None,
        )
    axis.set_xlabel("seconds since load start")
    axis.set_ylim(bottom=0)  # a dip must look like one
    axis.set_title("chaos: throughput while replicas are killed")
    axis.legend()
    return fig


def _hang(plt: Any, hang: HangResult) -> Any:
    fig, axis = plt.subplots(figsize=(11, 4))
    colors = {"reuseport": "tab:blue", "steered": "tab:green", "docker": "tab:orange"}
    for name, figures in hang.setups.items():
        points = figures.throughput
        color = colors.get(name)
        times = [p.t_s for p in points]
        axis.plot(times, [p.ok for p in points], color=color, label=f"{name}: ok/s")
        axis.plot(
            times,
            [p.failed for p in points],
            color=color,
            linestyle=":",
            label=f"{name}: failed/s",
        )
    axis.axvline(0, color="red", alpha=0.5, linestyle="--", label="SIGSTOP")
    ours, docker = hang.setups.get("reuseport"), hang.setups.get("docker")
    gone = ours.stopped_listener_gone_s if ours else None
    if gone is not None:
        axis.axvline(gone, color="tab:blue", alpha=0.5, linestyle="--", label="reuseport: replaced")
    unhealthy = docker.unhealthy_s if docker else None
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
    axis.set_title("hung replica: throughput, reuseport (hash, steered) vs Docker HEALTHCHECK")
    axis.legend(fontsize="small")
    return fig


def _faults(plt: Any, faults: FaultsResult) -> Any:
    """Per scenario: failed requests (on faulted replicas, other) and reconvergence time."""
    names = [s.name for s in faults.scenarios]
    places = range(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    on = [s.failures_on_faulted for s in faults.scenarios]
    other = [s.failures_other for s in faults.scenarios]
    left.bar(places, on, color="tab:gray", label="on a faulted replica")
    left.bar(places, other, bottom=on, color="tab:red", label="other")
    left.set_title("failed requests per scenario")
    left.legend(fontsize="small")
    right.bar(
        places,
        [s.reconverge_s or 0 for s in faults.scenarios],
        color=["tab:blue" if s.converged else "tab:red" for s in faults.scenarios],
    )
    right.set_title("slowest reconvergence, s (red: never)")
    for axis in (left, right):
        axis.set_xticks(list(places))
        axis.set_xticklabels(names, rotation=35, ha="right", fontsize="small")
    return fig
