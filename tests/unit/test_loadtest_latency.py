"""The latency part's pure logic: hey's summary, the open-loop check, the report lines."""

import json
from pathlib import Path

import pytest

from loadtest import hey, latencyreport, openloop, report
from loadtest.harness.results import (
    LatencyResult,
    LoadtestResults,
    OpenLoopFigures,
    RateStep,
    SetupFigures,
    ThroughputResult,
)

HEY_OK = """
Summary:
  Total:\t10.0213 secs
  Slowest:\t0.0412 secs
  Fastest:\t0.0002 secs
  Average:\t0.0011 secs
  Requests/sec:\t1995.4127

  Total data:\t432100 bytes
  Size/request:\t21 bytes

Latency distribution:
  10% in 0.0004 secs
  25% in 0.0006 secs
  50% in 0.0008 secs
  75% in 0.0012 secs
  90% in 0.0019 secs
  95% in 0.0025 secs
  99% in 0.0061 secs

Status code distribution:
  [200]\t19990 responses
"""

HEY_ERRORS = (
    HEY_OK.replace("[200]\t19990 responses", "[200]\t19980 responses\n  [502]\t7 responses")
    + """
Error distribution:
  [3]\tGet "http://127.0.0.1:18150/": dial tcp 127.0.0.1:18150: connect: connection refused
  [12]\tGet "http://127.0.0.1:18150/": context deadline exceeded
"""
)


def test_hey_summary_is_parsed_in_milliseconds() -> None:
    result = hey.parse(HEY_OK)
    assert result.rps == pytest.approx(1995.4127)
    assert result.p50_ms == pytest.approx(0.8)
    assert result.p99_ms == pytest.approx(6.1)
    assert result.responses == 19990 and result.errors == 0
    assert result.duration_s == pytest.approx(10.0213)


def test_hey_errors_count_transport_errors_and_non_2xx() -> None:
    result = hey.parse(HEY_ERRORS)
    assert result.responses == 19987
    assert result.errors == 3 + 12 + 7


def test_hey_output_without_percentiles_is_refused() -> None:
    # hey prints no latency distribution when no request succeeded.
    with pytest.raises(ValueError, match="50%"):
        hey.parse(HEY_OK.split("Latency distribution:")[0])


def test_hey_command_spreads_the_rate_over_the_workers() -> None:
    argv = hey.command("http://127.0.0.1:1/", 2000, 64, 2.0)
    assert argv[argv.index("-c") + 1] == "64"
    assert float(argv[argv.index("-q") + 1]) * 64 == pytest.approx(2000, rel=1e-4)
    assert argv[argv.index("-z") + 1] == "2s" and argv[-1] == "http://127.0.0.1:1/"
    with pytest.raises(ValueError):
        hey.command("http://127.0.0.1:1/", 0, 64, 2.0)


def test_held_means_within_the_tolerance_below_offered() -> None:
    assert hey.held(2000, 1960, 0.05)
    assert hey.held(2000, 2010, 0.05)
    assert not hey.held(2000, 1890, 0.05)
    assert not hey.held(0, 0)


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
    measured = hey.HeyResult(1500.0, 0.8, 6.1, 15000, 0, 10.0)
    assert not openloop.figures(2000, measured, 0.05).held
    assert openloop.figures(1520, measured, 0.05).held


def _fig(p50: float, p99: float, held: bool = True) -> OpenLoopFigures:
    return OpenLoopFigures(achieved_rps=1990.0, p50_ms=p50, p99_ms=p99, responses=19900, held=held)


def latency(reuseport_p99_at_75: float = 3.0, held: bool = True) -> LatencyResult:
    return LatencyResult(
        replicas=4,
        connections=64,
        duration_s=10,
        tool="hey 0.1.4",
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
