"""The steering-cost and balance rows: paired ratios, medians and their checks."""

from loadtest import balancereport
from loadtest.harness.steerfigures import BalanceResult, ScheduledRun, SteerCostResult
from loadtest.steercost import pair_order
from loadtest.wrk import WrkResult


def wrk_run(rps: float, p99: float) -> WrkResult:
    return WrkResult(rps=rps, p50_ms=1, p99_ms=p99, errors=0, requests=int(rps), duration_s=1)


def open_run(rps: float, p99: float) -> ScheduledRun:
    return ScheduledRun(offered_rps=10000, rps=rps, p50_ms=0.1, p99_ms=p99, not_sent=2)


def test_pairs_alternate_which_setup_goes_first() -> None:
    assert [pair_order(i) for i in range(3)] == [
        ("reuseport", "steered"),
        ("steered", "reuseport"),
        ("reuseport", "steered"),
    ]


def test_cost_checks_take_the_median_of_the_paired_ratios_not_the_ratio_of_medians() -> None:
    cost = SteerCostResult(
        connections=64,
        duration_s=10,
        pairs=3,
        runs={
            "reuseport": [wrk_run(100, 10), wrk_run(50, 10), wrk_run(80, 10)],
            "steered": [wrk_run(99, 10), wrk_run(49, 12), wrk_run(60, 10)],
        },
    )
    assert balancereport.paired_ratios(cost, "rps") == [0.99, 0.98, 0.75]
    (rps, p99) = balancereport.cost_checks(cost)
    assert rps[1] and rps[2].startswith("0.980 (median of 3 paired ratios")
    assert p99[1] and p99[2].startswith("1.000")
    assert any("| 3 | 80 | 60 | 0.750 |" in line for line in balancereport.lines(cost, None))


def test_balance_checks_want_more_req_s_at_no_worse_p99() -> None:
    balance = BalanceResult(
        replicas=4,
        cpus=0.1,
        connections=4,
        offered_rps=10000,
        runs={
            "reuseport": [open_run(8000, 0.4), open_run(9000, 0.3), open_run(7000, 0.5)],
            "steered": [open_run(10000, 0.5), open_run(10000, 0.5), open_run(10000, 0.6)],
        },
    )
    (rps, p99) = balancereport.balance_checks(balance)
    assert rps[1] and rps[2] == "1.25 (expected >= 1.05)"
    assert not p99[1] and p99[2] == "1.25 (expected <= 1)"
    rows = balancereport.lines(None, balance)
    assert "| round-robin | 10,000 | 100 % | 0.10 | 0.50 | 2 | 1.25 | 1.25 |" in rows
    assert "| hash | 8,000 | 80 % | 0.10 | 0.40 | 2 | 1.00 | 1.00 |" in rows
    assert any("Latency from the scheduled send time" in line for line in rows)


def test_no_runs_no_checks() -> None:
    assert balancereport.cost_checks(SteerCostResult()) == []
    assert balancereport.balance_checks(BalanceResult()) == []
    assert balancereport.lines(None, None) == []
