"""The hang part's open-loop rows (``loadtest.hangopen``): the kernel's hash against
steering, a SIGSTOPped replica under a fixed rate of independent requests. Pure functions
of ``HangResult``; checks are ``(name, met, detail)`` tuples, as ``steerreport``'s."""

from __future__ import annotations

from loadtest.hangopen import lowest_over_median
from loadtest.harness.openhang import OpenHangFigures
from loadtest.harness.results import HangResult
from reuseport import judge, supervisor

HASH, STEERED = "reuseport", "steered"
HURT_SHARE_MAX = 0.25  # steered failed or slow requests over hash's
# A steered replica leaves the map SUSPECT_AFTER_S after its last accept, seen by a read
# at most STEER_POLL_S later: no request sent after that may be hurt (plus a pass's time).
HURT_MAX_S = judge.SUSPECT_AFTER_S + supervisor.STEER_POLL_S + 0.1

CheckTuple = tuple[str, bool, str]


def checks(hang: HangResult) -> list[CheckTuple]:
    ours, hashed = hang.open_loop.get(STEERED), hang.open_loop.get(HASH)
    if not ours or not hashed:
        return []
    # Failed or slow, not failed alone: with tcp_migrate_req=1 the requests queued on the
    # hung replica move to the others when it is replaced, and are answered late rather
    # than failing if the client waits longer than the hang window took. Failed alone
    # then says more about the client's timeout than about the isolation.
    hurt, hash_hurt = ours.failures + ours.slow, hashed.failures + hashed.slow
    bound = hash_hurt * HURT_SHARE_MAX
    closed = ""
    if STEERED in hang.setups and HASH in hang.setups:
        closed = (
            f"; locust's closed loop: {hang.setups[STEERED].failures} vs "
            f"{hang.setups[HASH].failures} failed, where every user soon waits on a stuck "
            "request in either setup, so it counts users"
        )
    until = ours.hurt_until_s
    return [
        (
            "hang: steered failed or slow requests <= 1/4 of hash's",
            hurt <= bound,
            f"open loop: {hurt} ({ours.failures} failed, {ours.slow} slow) vs {hash_hurt} "
            f"({hashed.failures} failed, {hashed.slow} slow) (expected <= {bound:g}){closed}",
        ),
        (
            "hang: steered, no request sent after the suspicion window is hurt",
            until is not None and until <= HURT_MAX_S,
            f"the last failed or slow request was sent {_secs(until)} after the SIGSTOP "
            f"(expected <= {HURT_MAX_S:.2f} s; hash {_secs(hashed.hurt_until_s)})",
        ),
    ]


def lines(hang: HangResult) -> list[str]:
    if not hang.open_loop:
        return []
    out = [
        "",
        f"The same hang under open-loop load: {hang.open_rate:,.0f} requests/s, each on a new "
        f"connection and on its own (`loadtest/openclient.py`; a stuck request holds up no "
        f"other, as with many independent clients), timeout {_fmt(hang.network_timeout_s)} s:",
        "",
        "| --balance | requests | failed | slow > 1 s | last hurt request sent after "
        "| hurt later than 1 s | hung listener gone | lowest in-time/s after ÷ median before |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {HASH: "hash", STEERED: "round-robin (steered)"}
    for key, name in names.items():
        fig = hang.open_loop.get(key)
        if fig:
            out.append(_row(name, fig))
    return out


def _row(name: str, fig: OpenHangFigures) -> str:
    return (
        f"| {name} | {fig.requests:,} | {fig.failures:,} | {fig.slow:,} | "
        f"{_secs(fig.hurt_until_s)} | {fig.hurt_later_than_1s:,} | "
        f"{_secs(fig.stopped_listener_gone_s)} | {_fmt(lowest_over_median(fig.per_second), 2)} |"
    )


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
