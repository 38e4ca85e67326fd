"""The fault suite's report: table rows, checks and the chart come only from the figures."""

from pathlib import Path
from typing import Any

from loadtest import faultreport, report
from loadtest.faults.common import Fault, Scenario
from loadtest.harness.results import (
    FaultScenario,
    FaultsResult,
    LoadtestResults,
    ScaleoutResult,
)


def scenario(**figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "replica faults",
        "group": "replica",
        "faults": [{"t_s": 1.0, "kind": "docker kill", "replica": 2, "reconverge_s": 0.3}],
        "requests": 1000,
        "failures": 2,
        "failures_on_faulted": 2,
        "failures_other": 0,
        "running_max": 5,
        "running_bound": 5,
        "creations": 1,
        "creations_max_per_s": 1,
        "reconverge_s": 0.3,
        "converged": True,
        "app_restarts": 0,
    }
    return {**base, **figures}


def results(*scenarios: dict[str, Any]) -> LoadtestResults:
    return LoadtestResults.from_json(
        {
            "machine": {"date": "2026-11-29"},
            "command": "loadtest/run --only faults",
            "faults": {
                "replicas": 4,
                "users": 20,
                "network_timeout_s": 5,
                "tcp_migrate_req_before": 0,
                "tcp_migrate_req_restored": True,
                "scenarios": list(scenarios),
            },
        }
    )


def test_a_clean_scenario_meets_its_check_and_is_one_table_row() -> None:
    typed = results(scenario())
    assert typed.faults is not None
    [(name, met, detail)] = faultreport.checks(typed.faults)
    assert met and "0 other failed" in detail
    table = report.markdown(typed)
    assert "| replica faults | 1 | 1,000 | 2 | 0 | 5 (5) | 1 (1) | 0.30 s | 0 |" in table


def test_each_key_assertion_alone_makes_the_check_short() -> None:
    bad = [
        scenario(failures_other=1),
        scenario(running_max=6),
        scenario(converged=False, reconverge_s=None),
        scenario(app_restarts=1),
    ]
    typed = results(*bad)
    assert typed.faults is not None
    assert [met for _name, met, _detail in faultreport.checks(typed.faults)] == [False] * 4
    assert "| never |" in report.markdown(typed)


def test_soak_growth_is_short_and_flat_is_met() -> None:
    def soak(rss_ratio: float) -> dict[str, Any]:
        return scenario(
            name="soak",
            app_restarts=None,
            soak={
                "duration_s": 120,
                "start": {"rss_mb": 35, "open_fds": 8, "threads": 4, "cpu_percent": 3},
                "warm": {"rss_mb": 40, "open_fds": 12, "threads": 6, "cpu_percent": 3},
                "end": {"rss_mb": 40 * rss_ratio, "open_fds": 12, "threads": 6, "cpu_percent": 9},
                "ratio": {"rss_mb": rss_ratio, "open_fds": 1.0, "threads": 1.0, "cpu_percent": 3},
            },
        )

    flat, grown = results(soak(1.1)), results(soak(2.0))
    assert flat.faults is not None and grown.faults is not None
    assert [c[1] for c in faultreport.checks(flat.faults)] == [True, True]  # CPU% not judged
    assert [c[1] for c in faultreport.checks(grown.faults)] == [True, False]
    assert "rss_mb 35.0 -> 40.0 -> 44.0 (end/warm x1.10)" in report.markdown(flat)


def test_write_draws_the_faults_chart(tmp_path: Path) -> None:
    written = report.write(results(scenario(), scenario(name="soak")), tmp_path)
    assert tmp_path / "faults.png" in written
    assert faultreport.lines(FaultsResult(skipped="no sysctl")) == [
        "",
        "Faults: skipped (no sysctl).",
    ]


def test_failures_belong_to_a_fault_only_on_its_replica_and_window() -> None:
    owner = Scenario.__new__(Scenario)
    owner.faults = [
        Fault(wall=100.0, kind="docker kill", replica=2, since=100.0, done_wall=101.0),
        Fault(wall=200.0, kind="supervisor SIGKILL", replica=None, since=200.0, done_wall=201),
    ]
    owner.result = FaultScenario()
    assert owner._owner({"t": 100.5, "replica": "2"}) is owner.faults[0]
    assert owner._owner({"t": 101.9, "replica": None}) is owner.faults[0]  # new connection
    assert owner._owner({"t": 100.5, "replica": "3"}) is None  # another replica's
    assert owner._owner({"t": 102.5, "replica": "2"}) is None  # after the window
    assert owner._owner({"t": 200.5, "replica": None}) is None  # the tool's own fault


def test_a_partial_run_keeps_the_other_parts_of_the_previous_results(tmp_path: Path) -> None:
    from loadtest.__main__ import carry_over

    previous = results(scenario())
    previous.scaleout = ScaleoutResult(replicas=16, seconds=2.5)
    report.write(previous, tmp_path)
    now = LoadtestResults(command="loadtest/run --only faults")
    now.faults = FaultsResult(replicas=4)
    carry_over(now, tmp_path / "results.json", ["faults"])
    assert now.carried_over == ["scaleout"] and now.scaleout is not None
    assert now.faults.replicas == 4 and now.faults.scenarios == []  # this run's own part
    assert "scaleout carried over from the run of 2026-11-29." in report.markdown(now)
    smoke = LoadtestResults(smoke=True)
    carry_over(smoke, tmp_path / "results.json", ["faults"])
    assert smoke.carried_over == []  # a smoke run never mixes with a full one
