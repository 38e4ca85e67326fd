"""The fault suite's part of results.md, the README table and the checks: one row per
scenario, from ``FaultsResult`` only."""

from __future__ import annotations

from loadtest.harness.results import FaultScenario, FaultsResult


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _restarts(scenario: FaultScenario) -> str:
    return "n/a" if scenario.app_restarts is None else str(scenario.app_restarts)


def lines(faults: FaultsResult) -> list[str]:
    if faults.skipped:
        return ["", f"Faults: skipped ({faults.skipped})."]
    if not faults.scenarios:
        return []
    restored = "restored after" if faults.tcp_migrate_req_restored else "NOT restored"
    out = [
        "",
        f"Faults: {faults.replicas} replicas (max surge {faults.max_surge}), each scenario "
        f"its own `up -d` service under locust load ({faults.users} users, keep-alive and "
        f"new-connection, locust network timeout {_num(faults.network_timeout_s)} s); "
        f"net.ipv4.tcp_migrate_req=1 for this part (was {faults.tcp_migrate_req_before}, "
        f"{restored}). Failed requests are split into those on a deliberately faulted "
        "replica and the rest; running is the most replica containers at once (sampled every "
        "50 ms); reconverge is the slowest fault to all replicas ready in `ps --json`; app "
        "restarts are replicas the tool itself restarted (n/a where every replacement is of "
        "a faulted replica):",
        "",
        "| scenario | faults | requests | failed on faulted | failed other | running max "
        "(bound) | created (max/s) | reconverge | app restarts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in faults.scenarios:
        reconverge = "never" if not s.converged else f"{_num(s.reconverge_s, 2)} s"
        out.append(
            f"| {s.name} | {len(s.faults)} | {s.requests:,} | {s.failures_on_faulted} | "
            f"{s.failures_other} | {s.running_max} ({s.running_bound}) | {s.creations} "
            f"({s.creations_max_per_s}) | {reconverge} | {_restarts(s)} |"
        )
    for s in faults.scenarios:
        if s.problem:
            out.append(f"\n- {s.name}: `ps --json` problem: {s.problem}")
        if s.soak:
            soak = s.soak
            figures = ", ".join(
                f"{key} {_num(getattr(soak.start, key), 1)} -> "
                f"{_num(getattr(soak.warm, key), 1)} -> {_num(getattr(soak.end, key), 1)}"
                f" (end/warm x{_num(soak.ratio.get(key), 2)})"
                for key in ("rss_mb", "open_fds", "threads", "cpu_percent")
            )
            out.append(
                f"\n- soak ({_num(soak.duration_s)} s of churn), the detached supervisor at "
                "start -> after the warm-up kills -> end: " + figures
            )
        for note in s.notes:
            out.append(f"\n- {s.name}: {note}")
    return out


SOAK_FLAT = 1.5  # end / start above this is growth, not noise


def checks(faults: FaultsResult) -> list[tuple[str, bool, str]]:
    """(name, met, detail) per scenario: the suite's acceptance."""
    found: list[tuple[str, bool, str]] = []
    for s in faults.scenarios:
        restarts_ok = s.app_restarts in (None, 0)
        met = (
            s.failures_other == 0
            and s.running_max <= s.running_bound
            and s.converged
            and restarts_ok
        )
        found.append(
            (
                f"faults: {s.name}: no other failure, within N + surge, reconverged, "
                "no app restart",
                met,
                f"{s.failures_other} other failed, running max {s.running_max} <= "
                f"{s.running_bound}, reconverged {'yes' if s.converged else 'NO'}, app "
                f"restarts {_restarts(s)}",
            )
        )
        if s.soak:
            grown = {k: v for k, v in s.soak.ratio.items() if k != "cpu_percent"}
            flat = all(v is not None and v <= SOAK_FLAT for v in grown.values())
            found.append(
                (
                    f"faults: soak: the supervisor's RSS, fds and threads flat after the "
                    f"warm-up (end/warm <= {SOAK_FLAT:g})",
                    flat,
                    ", ".join(f"{k} x{_num(v, 2)}" for k, v in s.soak.ratio.items()),
                )
            )
    return found
