"""The cost part's and the scale-out's lines in results.md (the README table)."""

from __future__ import annotations

from loadtest.harness.results import CostResult, ScaleoutResult


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def startup_line(scale: ScaleoutResult) -> str:
    said = (
        f"`up --replicas {scale.replicas} -d` from nothing to all listening in "
        f"{_fmt(scale.seconds, 2)} s"
    )
    if scale.docker_run_seconds is not None:
        said += (
            f"; {scale.replicas} parallel `docker run -d` of the same image "
            f"{_fmt(scale.docker_run_seconds, 2)} s (ratio {_fmt(scale.ratio, 2)}x)"
        )
    if scale.rounds > 1:
        said += f"; best of {scale.rounds} alternating runs each"
    return said


def cost_lines(cost: CostResult) -> list[str]:
    lines = [
        "",
        "Cost of the idle detached supervisor (CPU of its container's processes, % of one "
        "core, and their RSS, read from the host; status-file rewrites in the sample):",
        "",
        "| replicas | CPU % of a core | RSS MiB | sampled s | status writes |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {f.replicas} | {f.cpu_percent:.2f} | {f.rss_mb:.1f} | {_fmt(f.sample_s)} | "
        f"{_fmt(f.status_writes)} |"
        for f in cost.idle
    ]
    if cost.startup:
        lines += ["", "Start-up: " + startup_line(cost.startup) + "."]
    return lines
