"""The steered rows: steering against the kernel's hash, only from the measurements."""

from pathlib import Path
from typing import Any

from loadtest import report, slowmix, steerreport
from loadtest.harness.results import HangSecond, LoadtestResults
from tests.unit.test_loadtest_report import HANG, RESULTS


def _results(**parts: Any) -> LoadtestResults:
    return LoadtestResults.from_json({**RESULTS, **parts})


def _throughput(steered_rps: float, steered_p99: float, shares: dict[str, Any]) -> dict[str, Any]:
    tp = RESULTS["throughput"]
    steered = {"description": "steered", "rps": steered_rps, "p50_ms": 0.8, "errors": 0}
    return {
        **tp,
        "setups": {**tp["setups"], "steered": {**steered, "p99_ms": steered_p99}},
        "shares": shares,
    }


def _share(per_replica: dict[str, int], ratio: float | None) -> dict[str, Any]:
    return {"per_replica": per_replica, "max_over_min": ratio}


SHARES = {
    "64": {
        "reuseport": _share({"1": 20, "2": 12, "3": 16, "4": 16}, 1.67),
        "steered": _share({"1": 16, "2": 16, "3": 16, "4": 16}, 1.0),
    },
    "1024": {
        "reuseport": _share({"1": 280, "2": 240, "3": 250, "4": 254}, 1.17),
        "steered": _share({"1": 256, "2": 256, "3": 256, "4": 256}, 1.0),
    },
}


def _checks(results: LoadtestResults) -> dict[str, report.Check]:
    return {c.name: c for c in report.checks(results)}


def test_steered_throughput_checks_divide_by_the_hash_row() -> None:
    # hash (the "reuseport" row): 70,000 req/s, p99 3.0 ms
    found = _checks(_results(throughput=_throughput(68_600.0, 3.3, SHARES)))
    assert found["steered req/s vs hash"].met  # 0.98 >= 0.97
    assert found["steered req/s vs hash"].detail == "0.980 (expected >= 0.97)"
    assert found["steered p99 vs hash"].met  # 1.1 <= 1.1
    slow = _checks(_results(throughput=_throughput(67_000.0, 3.4, SHARES)))
    assert not slow["steered req/s vs hash"].met  # 0.957
    assert not slow["steered p99 vs hash"].met  # 1.133


def test_steered_share_checks_at_every_count_and_a_replica_with_none_is_short() -> None:
    found = _checks(_results(throughput=_throughput(70_000.0, 3.0, SHARES)))
    at_64 = found["steered share of new connections at 64 connections (max/min)"]
    assert at_64.met and at_64.detail == "1.00 (expected <= 1.05; hash 1.67)"
    assert found["steered share of new connections at 1024 connections (max/min)"].met
    uneven = {
        **SHARES,
        "64": {**SHARES["64"], "steered": _share({"1": 32, "2": 32}, None)},
        "1024": {**SHARES["1024"], "steered": _share({"1": 270, "2": 250}, 1.08)},
    }
    short = _checks(_results(throughput=_throughput(70_000.0, 3.0, uneven)))
    none = short["steered share of new connections at 64 connections (max/min)"]
    assert not none.met and none.detail.startswith("inf (a replica got none)")
    assert not short["steered share of new connections at 1024 connections (max/min)"].met


def test_no_steered_checks_without_a_steered_row() -> None:
    assert not [c for c in report.checks(_results()) if "steered" in c.name]


def test_shares_are_printed_side_by_side_per_count() -> None:
    table = report.markdown(_results(throughput=_throughput(70_000.0, 3.0, SHARES)))
    assert "| connections | reuseport (hash) | steered (round-robin) |" in table
    assert "| 64 | 1.67 (1: 20, 2: 12, 3: 16, 4: 16) | 1.00 (1: 16, 2: 16, 3: 16, 4: 16) |" in (
        table
    )
    assert "| 1024 | 1.17 (1: 280, 2: 240, 3: 250, 4: 254) | 1.00 (" in table
    # A setup measured at one count only gets "-" at the other.
    typed = _results(throughput=_throughput(70_000.0, 3.0, {**SHARES, "1024": {}})).throughput
    assert typed is not None
    partial = steerreport.share_lines(typed.shares)
    assert "| 1024 | - | - |" in partial


def _hang(steered_failures: int) -> dict[str, Any]:
    steered = {
        **HANG["setups"]["reuseport"],
        "failures": steered_failures,
        "failures_by_error": {"timed out": steered_failures},
        "throughput": [
            {"t_s": -2.0, "ok": 800, "failed": 0},
            {"t_s": -1.0, "ok": 900, "failed": 0},
            {"t_s": 0.0, "ok": 850, "failed": 0},
            {"t_s": 1.0, "ok": 700, "failed": 0},
        ],
    }
    return {**HANG, "setups": {**HANG["setups"], "steered": steered}}


def test_hang_check_steered_at_most_a_quarter_of_hash_failures(tmp_path: Path) -> None:
    name = "hang: steered failed requests <= 1/4 of hash's"
    met = _checks(_results(hang=_hang(5)))[name]  # hash failed 21
    assert met.met and met.detail == "5 vs 21 (expected <= 5.25)"
    assert not _checks(_results(hang=_hang(6)))[name].met
    report.write(_results(hang=_hang(5)), tmp_path)
    table = (tmp_path / "results.md").read_text()
    # The steered row sits between hash and Docker, its dip 700 / median(800, 900) = 0.82.
    hang_table = table[table.index("Hung replica") :]
    rows = [line for line in hang_table.splitlines() if line.startswith("| ") and " s | " in line]
    rows = [line for line in rows if not line.startswith("| setup |")]
    assert [r.split(":")[0] for r in rows] == ["| reuseport", "| steered", "| Docker"]
    assert rows[1].endswith("| 15,000 | 4 | 5 | 0.82 |")
    assert rows[0].endswith("| 21 | 0.62 |")  # 500 after the SIGSTOP, 800 before


def test_dip_needs_whole_seconds_on_both_sides() -> None:
    def seconds(*points: tuple[float, int]) -> list[HangSecond]:
        return [HangSecond(t, ok, 0) for t, ok in points]

    assert steerreport.dip(seconds((-1.5, 1000), (-0.5, 10), (0.5, 400))) == 0.4
    assert steerreport.dip(seconds((-0.5, 1000), (0.5, 400))) is None  # none wholly before
    assert steerreport.dip(seconds((-2.0, 1000))) is None
    assert steerreport.dip(seconds((-1.0, 0), (0.0, 5))) is None  # no rate to divide by


def test_slow_mix_puts_each_policy_beside_hash_without_a_check() -> None:
    def figures(rps: float, p99: float) -> dict[str, Any]:
        return {"description": "d", "rps": rps, "p50_ms": 1.0, "p99_ms": p99, "errors": 0}

    mix = {
        "slow_fraction": 0.005,
        "slow_s": 0.5,
        "connections": 64,
        "duration_s": 10.0,
        "repeats": 3,
        "setups": {
            "reuseport": figures(8000.0, 20.0),
            "steered": figures(8400.0, 15.0),
            "least-conn": figures(7600.0, 30.0),
        },
    }
    results = _results(throughput={**_throughput(70_000.0, 3.0, SHARES), "slow_mix": mix})
    table = report.markdown(results)
    assert "0.5% of them `GET /sleep?s=0.5`, 64 wrk connections for 10 s, median of 3" in table
    assert "| hash | 8,000 | 1.00 | 20.00 | 0 | 1.00 | 1.00 |" in table
    assert "| round-robin | 8,400 | 1.00 | 15.00 | 0 | 1.05 | 0.75 |" in table
    assert "| least-conn | 7,600 | 1.00 | 30.00 | 0 | 0.95 | 1.50 |" in table
    assert not [c for c in report.checks(results) if "slow" in c.name.lower()]
    back = LoadtestResults.from_json(results.to_json())
    assert back == results and "slow_mix" not in _results().to_json()["throughput"]


def test_wrk_mix_script_asks_for_the_slow_path_at_the_given_fraction() -> None:
    script = slowmix.lua_script(0.005, 0.5)
    assert 'wrk.format("GET", "/sleep?s=0.5")' in script
    assert "math.random() < 0.005" in script
