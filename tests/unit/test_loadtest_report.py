"""The benchmark's report: ratios, checks and table come only from the measurements."""

from pathlib import Path

from loadtest import report

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
    ratios = report.ratios(RESULTS)
    assert ratios["nginx"] == {"rps": 2.8, "p99": 0.5}
    assert ratios["reuseport"] == {"rps": 1.0, "p99": 1.0}


def test_checks_report_met_and_short_without_changing_figures() -> None:
    found = {c.name: c.met for c in report.checks(RESULTS)}
    assert found["reuseport req/s vs nginx"] is True
    assert found["reuseport req/s vs HAProxy"] is False  # 2.0 < 2.3: reported SHORT
    assert found["tool-managed vs hand-started replicas (req/s)"] is True
    assert found["chaos: failures other than in flight on killed replicas"] is True
    assert found["chaos: replacement median vs Docker restart policy"] is True


def test_write_produces_json_markdown_and_charts(tmp_path: Path) -> None:
    written = report.write(RESULTS, tmp_path)
    assert {p.name for p in written} == {"results.json", "results.md", "setups.png", "chaos.png"}
    table = (tmp_path / "results.md").read_text()
    assert "| nginx: proxy | 25,000 |" in table
    assert "SHORT: reuseport req/s vs HAProxy: 2.00 (expected >= 2.3)" in table


def test_readme_block_is_replaced_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nold\n{report.README_END}\nrest\n")
    report.update_readme(readme, "new table\n")
    assert (
        readme.read_text()
        == f"intro\n{report.README_START}\nnew table\n{report.README_END}\nrest\n"
    )
