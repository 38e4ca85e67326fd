"""The report's rollout-under-overload rows (``loadtest.overload``): failed requests of a
rollout while every request opens a new connection, kernel hash and steered side by side.

Pure functions of the measurements; checks are ``(name, met, detail)`` tuples, as
``steerreport``'s.
"""

from __future__ import annotations

from loadtest.harness.overloadresult import OverloadRun
from loadtest.harness.results import RolloutResult

STEERED = "round-robin"  # the tool's default policy
CheckTuple = tuple[str, bool, str]


def _errors(run: OverloadRun) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in run.errors.items())


def lines(rollout: RolloutResult) -> list[str]:
    if not rollout.overload:
        return []
    out = [
        "",
        f"Rollout {rollout.from_image} -> {rollout.to_image} of {rollout.replicas} replicas "
        "under new-connection-per-request overload (wrk -c128, `Connection: close`), "
        "net.ipv4.tcp_migrate_req=0:",
        "",
    ]
    for run in rollout.overload:
        out.append(
            f"- --balance {run.balance}: {run.failures} failed of {run.requests:,} requests "
            f"({_errors(run)}) at {run.rps:,.0f} req/s, "
            f"{'completed' if run.rollout_ok else 'FAILED'} in {run.rollout_s:.1f} s"
        )
    return out


def checks(rollout: RolloutResult | None) -> list[CheckTuple]:
    found: list[CheckTuple] = []
    for run in rollout.overload if rollout else []:
        if run.balance == STEERED and run.tcp_migrate_req == 0:
            found.append(
                (
                    "steered rollout under overload, tcp_migrate_req=0: 0 failed",
                    run.failures == 0 and run.rollout_ok,
                    f"{run.failures} failed of {run.requests:,} ({_errors(run)})",
                )
            )
    return found
