"""The latency part's pure logic: hey's summary, the open-loop check, the report lines."""

import json
from pathlib import Path

import pytest

from loadtest import h2load, latencyreport, openloop, report
from loadtest.harness.results import (
    LatencyResult,
    LoadtestResults,
    OpenLoopFigures,
    RateStep,
    SetupFigures,
    ThroughputResult,
)

SUMMARY = """
finished in 3.00s, 6400.00 req/s, 937.50KB/s
requests: 19200 total, 19200 started, 19200 done, 19198 succeeded, 2 failed, 2 errored, 0 timeout
status codes: 19197 2xx, 0 3xx, 0 4xx, 1 5xx
"""


def log_of(micros: list[int], statuses: list[int] | None = None) -> str:
    statuses = statuses or [200] * len(micros)
    return "".join(
        f"{1796240318611711 + i * 100}\t{status}\t{us}\n"
        for i, (status, us) in enumerate(zip(statuses, micros, strict=True))
    )


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert h2load.percentile(values, 0.50) == 50
    assert h2load.percentile(values, 0.99) == 99
    assert h2load.percentile([7], 0.99) == 7
    with pytest.raises(ValueError):
        h2load.percentile([], 0.5)


def test_log_gives_percentiles_in_ms_and_the_achieved_rate() -> None:
    # 100 requests: 1..100 ms, shuffled as the log's end-of-response order shuffles them.
    micros = [1000 * ((7 * i) % 100 + 1) for i in range(100)]
    result = h2load.parse(log_of(micros), SUMMARY, 2.0)
    assert result.p50_ms == 50.0 and result.p99_ms == 99.0
    assert result.rps == 50.0 and result.responses == 100
    assert result.errors == 2  # failed, from the summary


def test_errors_count_failed_requests_and_non_2xx_3xx_statuses() -> None:
    result = h2load.parse(log_of([500, 600, 700], [200, 503, 302]), SUMMARY, 1.0)
    assert result.errors == 2 + 1


def test_output_without_requests_is_refused() -> None:
    with pytest.raises(ValueError, match="no request"):
        h2load.parse("", SUMMARY, 1.0)
    with pytest.raises(ValueError, match="requests line"):
        h2load.parse(log_of([500]), "finished in 1.00s", 1.0)


def test_command_spreads_the_rate_over_the_connections() -> None:
    argv = h2load.command("http://127.0.0.1:1/", 2000, 64, 2.0, Path("/tmp/x.tsv"))
    assert argv[argv.index("-c") + 1] == "64" and "--h1" in argv
    assert float(argv[argv.index("--rps") + 1]) * 64 == pytest.approx(2000, rel=1e-4)
    assert argv[argv.index("-D") + 1] == "2" and argv[-1] == "http://127.0.0.1:1/"
    assert argv[argv.index("--log-file") + 1] == "/tmp/x.tsv"
    with pytest.raises(ValueError):
        h2load.command("http://127.0.0.1:1/", 0, 64, 2.0, Path("/tmp/x.tsv"))


def test_held_means_within_the_tolerance_below_offered() -> None:
    assert h2load.held(2000, 1960, 0.05)
    assert h2load.held(2000, 2010, 0.05)
    assert not h2load.held(2000, 1890, 0.05)
    assert not h2load.held(0, 0)


def test_setups_compared_are_those_available_in_order() -> None:
    assert openloop.latency_setups(("reuseport", "manual", "nginx", "haproxy")) == [
        "reuseport",
        "nginx",
        "haproxy",
    ]
    with_steered = ("reuseport", "steered", "manual", "nginx", "haproxy", "limit")
    assert openloop.latency_setups(with_steered) == ["reuseport", "steered", "nginx", "haproxy"]


def test_each_step_leads_with_another_setup() -> None:
    names = ["a", "b", "c"]
    assert [openloop.rotated(names, i) for i in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_proxy_max_comes_from_the_throughput_part_when_it_measured_nginx() -> None:
    assert openloop.proxy_max_of(None) is None
    assert openloop.proxy_max_of(ThroughputResult(setups={"reuseport": SetupFigures()})) is None
    throughput = ThroughputResult(
        connections=64, repeats=5, duration_s=10, setups={"nginx": SetupFigures(rps=8000.0)}
    )
    found = openloop.proxy_max_of(throughput)
    assert found is not None and found[0] == 8000.0 and "5 x 10 s" in found[1]


def test_figures_mark_a_run_that_fell_behind() -> None:
    measured = h2load.ClientResult(1500.0, 0.8, 6.1, 15000, 0, 10.0)
    assert not openloop.figures(2000, measured, 0.05).held
    assert openloop.figures(1520, measured, 0.05).held


def _fig(p50: float, p99: float, held: bool = True) -> OpenLoopFigures:
    return OpenLoopFigures(achieved_rps=1990.0, p50_ms=p50, p99_ms=p99, responses=19900, held=held)


def latency(reuseport_p99_at_75: float = 3.0, held: bool = True) -> LatencyResult:
    return LatencyResult(
        replicas=4,
        connections=64,
        duration_s=10,
        tool="h2load nghttp2/1.52.0",
        proxy="nginx",
        proxy_max_rps=8000.0,
        proxy_max_source="wrk",
        tolerance=0.05,
        descriptions={"reuseport": "one port", "nginx": "proxy"},
        steps=[
            RateStep(
                0.25,
                2000,
                ["reuseport", "nginx"],
                {"reuseport": _fig(0.5, 2.0), "nginx": _fig(1.0, 4.0)},
            ),
            RateStep(
                0.75,
                6000,
                ["nginx", "reuseport"],
                {"nginx": _fig(2.0, 5.0), "reuseport": _fig(0.9, reuseport_p99_at_75, held)},
            ),
        ],
    )


def test_ratios_divide_by_the_proxy_at_the_same_rate() -> None:
    ratios = latencyreport.ratios(latency())
    assert ratios["25%"]["reuseport"] == {"p50": 0.5, "p99": 0.5}
    assert ratios["75%"]["reuseport"] == {"p50": 0.45, "p99": 0.6}
    assert ratios["75%"]["nginx"] == {"p50": 1.0, "p99": 1.0}


def test_check_is_met_only_when_reuseport_p99_is_at_most_nginx_at_every_rate() -> None:
    (p99, client) = latencyreport.checks(latency())
    assert p99[1] is True and "25%: 0.50, 75%: 0.60" in p99[2]
    assert client[1] is True and client[2].startswith("4 of 4 runs")
    (p99, _) = latencyreport.checks(latency(reuseport_p99_at_75=5.5))
    assert p99[1] is False and "75%: 1.10" in p99[2]


def test_a_client_that_fell_behind_is_said_in_checks_and_table() -> None:
    result = latency(held=False)
    (_, client) = latencyreport.checks(result)
    assert client[1] is False and client[2].startswith("3 of 4 runs")
    text = "\n".join(latencyreport.lines(result))
    assert "FELL BEHIND" in text and "reuseport at 75%" in text
    assert "1,990 (behind)" in text


def test_table_rows_side_by_side_with_ratios() -> None:
    text = "\n".join(latencyreport.lines(latency()))
    assert (
        "| 25% = 2,000 req/s | reuseport: one port | 1,990 | 0.50 | 2.00 | 0 | 0.50 | 0.50 |"
        in text
    )
    assert "| 75% = 6,000 req/s | nginx: proxy | 1,990 | 2.00 | 5.00 | 0 | 1.00 | 1.00 |" in text
    assert "held every offered rate" in text and "FELL BEHIND" not in text
    # Shown in a fixed order (reuseport first), whatever order they were measured in.
    assert text.index("| 75% = 6,000 req/s | reuseport") < text.index("| 75% = 6,000 req/s | nginx")
    assert latencyreport.lines(LatencyResult()) == []


def test_report_carries_the_latency_part_through_results_json(tmp_path: Path) -> None:
    results = LoadtestResults(latency=latency(reuseport_p99_at_75=5.5))
    report.write(results, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["latency"]["steps"][1]["setups"]["reuseport"]["p99_ms"] == 5.5
    assert data["latency_ratios"]["75%"]["reuseport"]["p99"] == 1.1
    back = LoadtestResults.from_json(data)
    assert back.latency == results.latency
    markdown = report.markdown(back)
    assert "Latency at equal offered load (open loop)" in markdown
    assert "- SHORT: latency at equal offered load: reuseport p99 <= nginx" in markdown
