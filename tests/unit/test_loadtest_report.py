"""The benchmark's report: ratios, checks and table come only from the measurements."""

import json
from pathlib import Path
from typing import Any

from loadtest import report
from loadtest.harness.results import LoadtestResults


def typed(data: dict[str, Any]) -> LoadtestResults:
    """The measurements as the parts return them (read back as from a results.json)."""
    return LoadtestResults.from_json(data)


RESULTS = {
    "machine": {"date": "2026-11-29", "cores": 2, "kernel": "6.1", "docker": "20.10"},
    "command": "loadtest/run",
    "smoke": False,
    "throughput": {
        "replicas": 4,
        "connections": 64,
        "duration_s": 10,
        "repeats": 3,
        "tool": "wrk 4.1.0",
        "setups": {
            "reuseport": {
                "description": "one port",
                "rps": 70000.0,
                "p50_ms": 0.8,
                "p99_ms": 3.0,
                "errors": 0,
            },
            "manual": {
                "description": "by hand",
                "rps": 70700.0,
                "p50_ms": 0.8,
                "p99_ms": 3.1,
                "errors": 0,
            },
            "nginx": {
                "description": "proxy",
                "rps": 25000.0,
                "p50_ms": 2.0,
                "p99_ms": 6.0,
                "errors": 0,
            },
            "haproxy": {
                "description": "proxy",
                "rps": 35000.0,
                "p50_ms": 1.5,
                "p99_ms": 4.0,
                "errors": 0,
            },
        },
        "shares": {"64": {"reuseport": {"per_replica": {"1": 20, "2": 12}, "max_over_min": 1.67}}},
    },
    "chaos": {
        "duration_s": 30,
        "users": 40,
        "kills": [{"t_s": 5.0, "method": "SIGKILL", "replica": 1, "replacement_ms": 200}],
        "requests": 1000,
        "failures": 3,
        "failures_in_flight_on_killed": 3,
        "failures_other": 0,
        "replacement_ms": {"median": 200.0, "max": 250.0},
        "docker_policy_ms": {"median": 270.0, "max": 300.0},
        "throughput": [{"t_s": 0, "rps": 100}, {"t_s": 1, "rps": 110}],
    },
    "scaleout": {"replicas": 16, "seconds": 2.5},
}


def test_ratios_divide_reuseport_by_each_setup() -> None:
    ratios = report.ratios(typed(RESULTS))
    assert ratios["nginx"] == {"rps": 2.8, "p99": 0.5}
    assert ratios["reuseport"] == {"rps": 1.0, "p99": 1.0}


def test_checks_report_met_and_short_without_changing_figures() -> None:
    found = {c.name: c.met for c in report.checks(typed(RESULTS))}
    assert found["reuseport req/s vs nginx"] is True
    assert found["reuseport req/s vs HAProxy"] is False  # 2.0 < 2.3: reported SHORT
    assert found["tool-managed vs hand-started replicas (req/s)"] is True
    assert found["chaos: failures other than in flight on killed replicas"] is True
    assert found["chaos: replacement median vs Docker restart policy"] is True


def test_write_produces_json_markdown_and_charts(tmp_path: Path) -> None:
    written = report.write(typed(RESULTS), tmp_path)
    assert {p.name for p in written} == {"results.json", "results.md", "setups.png", "chaos.png"}
    table = (tmp_path / "results.md").read_text()
    assert "| nginx: proxy | 25,000 |" in table
    assert "SHORT: reuseport req/s vs HAProxy: 2.00 (expected >= 2.3)" in table


def test_results_json_reads_back_to_the_same_table(tmp_path: Path) -> None:
    results = typed(_with_hang())
    report.write(results, tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["hang"]["setups"]["docker"]["restart_count"] == 0
    assert "replacements" not in written["hang"]["setups"]["docker"]  # reuseport only
    back = LoadtestResults.from_json(written)
    assert back == results
    assert report.markdown(back) == (tmp_path / "results.md").read_text()


def test_readme_block_is_replaced_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nrest\n")
    report.update_readme(readme, "new table\n")
    assert (
        readme.read_text()
        == f"intro\n{report.README_START}\nnew table\n{report.README_END}\nrest\n"
    )


HANG: dict[str, Any] = {
    "replicas": 4,
    "users": 40,
    "duration_s": 20.0,
    "stopped_replica": 2,
    "network_timeout_s": 5.0,
    "hang_window_s": 5.0,
    "stop_timeout_s": 3,
    "health": {"interval_s": 1.0, "http_timeout_s": 1.0, "retries": 3},
    "tcp_migrate_req": 1,
    "tcp_migrate_req_before": 0,
    "tcp_migrate_req_restored": True,
    "setups": {
        "reuseport": {
            "ok": 15000,
            "slow": 4,
            "failures": 21,
            "failures_by_error": {
                "RetriesExceeded('http://127.0.0.1:18350/', 0, original=timed out)": 21
            },
            "successor_listening_s": 5.6,
            "stopped_listener_gone_s": 5.62,
            "unhealthy_s": None,
            "throughput": [
                {"t_s": -1.0, "ok": 800, "failed": 0},
                {"t_s": 0.0, "ok": 500, "failed": 0},
            ],
        },
        "docker": {
            "ok": 9000,
            "slow": 0,
            "failures": 160,
            "failures_by_error": {"ConnectionResetError(104)": 2, "timed out": 158},
            "successor_listening_s": None,
            "stopped_listener_gone_s": None,
            "unhealthy_s": 6.19,
            "restart_count": 0,
            "throughput": [
                {"t_s": -1.2, "ok": 800, "failed": 0},
                {"t_s": -0.2, "ok": 300, "failed": 9},
            ],
        },
    },
}


def _with_hang(**reuseport: Any) -> dict[str, Any]:
    hang: dict[str, Any] = {**HANG, "setups": {**HANG["setups"]}}
    hang["setups"]["reuseport"] = {**HANG["setups"]["reuseport"], **reuseport}
    return {**RESULTS, "hang": hang}


def test_hang_checks_compare_failures_and_the_replacement_time() -> None:
    found = {c.name: c for c in report.checks(typed(_with_hang()))}
    fewer = found["hang: reuseport failed requests < Docker HEALTHCHECK + restart always"]
    assert fewer.met and fewer.detail == "21 vs 160"
    in_time = found["hang: reuseport replaced the stopped replica within its hang window + 3 s"]
    assert in_time.met and "(expected <= 8 s)" in in_time.detail
    never = found["hang: Docker never replaced the stopped container (moby#28400)"]
    assert never.met and never.detail.startswith("no new listener, RestartCount 0")


def test_hang_checks_are_short_when_reuseport_fails_more_or_never_replaces() -> None:
    found = {
        c.name: c.met
        for c in report.checks(typed(_with_hang(failures=160, stopped_listener_gone_s=None)))
    }
    assert found["hang: reuseport failed requests < Docker HEALTHCHECK + restart always"] is False
    assert (
        found["hang: reuseport replaced the stopped replica within its hang window + 3 s"] is False
    )
    late = {c.name: c.met for c in report.checks(typed(_with_hang(successor_listening_s=8.5)))}
    assert (
        late["hang: reuseport replaced the stopped replica within its hang window + 3 s"] is False
    )


def test_hang_table_puts_both_setups_side_by_side(tmp_path: Path) -> None:
    written = report.write(typed(_with_hang()), tmp_path)
    assert "hang.png" in {p.name for p in written}
    table = (tmp_path / "results.md").read_text()
    assert "net.ipv4.tcp_migrate_req=1 for this part (was 0, restored after)" in table
    assert "locust network timeout 5 s" in table
    assert (
        "| reuseport: `up -d --balance hash`, --hang-window 5 s (default), --stop-timeout 3 "
        "| 5.60 s | 5.62 s | n/a | 15,000 | 4 | 21 |" in table
    )
    assert (
        "| Docker: --restart always + HEALTHCHECK (every 1 s, 3 retries) | never | never "
        "| 6.19 s | 9,000 | 0 | 160 |" in table
    )
    assert "reuseport 21 timed out; docker 158 timed out, 2 ConnectionResetError(104)" in table
    # The other parts' lines are all still there, in the same order.
    remaining = iter(table.splitlines())
    assert all(line in remaining for line in report.markdown(typed(RESULTS)).splitlines())


def test_hang_skipped_or_absent() -> None:
    assert "Hung replica" not in report.markdown(typed(RESULTS))
    skipped = report.markdown(typed({**RESULTS, "hang": {"skipped": "no tcp_migrate_req"}}))
    assert "Hung replica: skipped (no tcp_migrate_req)." in skipped
    assert not any(c.name.startswith("hang:") for c in report.checks(typed(RESULTS)))


COST = {
    "idle": [
        {"replicas": 4, "cpu_percent": 0.1, "rss_mb": 40.0, "sample_s": 30, "status_writes": 30},
        {"replicas": 32, "cpu_percent": 0.7, "rss_mb": 41.0, "sample_s": 30, "status_writes": 30},
        {"replicas": 128, "cpu_percent": 1.5, "rss_mb": 61.5, "sample_s": 30},
    ],
    "startup": {"replicas": 16, "seconds": 3.0, "docker_run_seconds": 2.5, "ratio": 1.2},
    "cpu_target_percent": 0.5,
    "cpu_target_replicas": 32,
    "rss_target_mb": 60.0,
    "startup_target_ratio": 1.15,
}


def test_cost_checks_read_the_targets_from_the_result() -> None:
    found = {c.name: c for c in report.checks(typed({**RESULTS, "cost": COST}))}
    cpu = found["cost: idle supervisor CPU at 32 replicas"]
    assert not cpu.met and "0.70 %" in cpu.detail
    assert not found["cost: idle supervisor RSS"].met  # 61.5 MiB at 128
    assert not found["cost: `up -d` vs parallel `docker run` to all listening"].met
    passing = {
        **COST,
        "idle": [{**f, "cpu_percent": 0.4, "rss_mb": 50.0} for f in COST["idle"]],
        "startup": {**COST["startup"], "ratio": 1.1},
    }
    assert all(
        c.met for c in report.checks(typed({**RESULTS, "cost": passing})) if "cost" in c.name
    )


def test_cost_table_has_a_row_per_replica_count_and_the_start_up(tmp_path: Path) -> None:
    report.write(typed({**RESULTS, "cost": COST}), tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "| 32 | 0.70 | 41.0 | 30 | 30 |" in text
    assert "| 128 | 1.50 | 61.5 | 30 | - |" in text
    assert "16 parallel `docker run -d` of the same image 2.50 s (ratio 1.20x)" in text
    back = LoadtestResults.from_json(json.loads((tmp_path / "results.json").read_text()))
    assert back.cost is not None and back.cost.startup is not None
    assert back.cost.startup.docker_run_seconds == 2.5
