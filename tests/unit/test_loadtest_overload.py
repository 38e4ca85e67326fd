"""The rollout-under-overload rows: wrk's failed requests by kind, the report's lines and
its check (steered, tcp_migrate_req=0: 0 failed), read back as from a results.json."""

from typing import Any

from loadtest import overloadreport, report, wrk
from loadtest.harness.results import LoadtestResults

WRK_REPORT = """Running 1h test @ http://127.0.0.1:18250/
  2 threads and 128 connections
  Latency Distribution
     50%    5.10ms
     99%   20.00ms
  105598 requests in 10.43s, 15.41MB read
  Socket errors: connect 0, read 26, write 3, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  10123.45
"""


def rollout(*rows: dict[str, Any]) -> LoadtestResults:
    return LoadtestResults.from_json(
        {
            "rollout": {
                "replicas": 4,
                "from": "reuseport-demo:v1",
                "to": "reuseport-demo:v2",
                "runs": [],
                "overload": list(rows),
            }
        }
    )


def row(balance: str, failures: int, ok: bool = True) -> dict[str, Any]:
    errors = {"connect": 0, "read": failures, "write": 0, "timeout": 0, "non_2xx": 0}
    return {
        "balance": balance,
        "tcp_migrate_req": 0,
        "rollout_ok": ok,
        "rollout_s": 6.3,
        "requests": 105598,
        "rps": 10123.4,
        "failures": failures,
        "errors": errors,
    }


def test_wrk_failures_by_kind_and_their_sum_in_parse() -> None:
    counts = wrk.error_counts(WRK_REPORT)
    assert counts == {"connect": 0, "read": 26, "write": 3, "timeout": 1, "non_2xx": 2}
    assert wrk.parse(WRK_REPORT).errors == 32


def test_wrk_without_errors_counts_zero_of_each_kind() -> None:
    clean = WRK_REPORT.replace("  Socket errors: connect 0, read 26, write 3, timeout 1\n", "")
    clean = clean.replace("  Non-2xx or 3xx responses: 2\n", "")
    assert set(wrk.error_counts(clean).values()) == {0}


def test_steered_row_with_failures_is_short_and_hash_gets_no_check() -> None:
    results = rollout(row("hash", 26), row("round-robin", 3))
    (check,) = overloadreport.checks(results.rollout)
    assert check[0] == "steered rollout under overload, tcp_migrate_req=0: 0 failed"
    assert check[1] is False and check[2].startswith("3 failed of 105,598")


def test_steered_row_without_failures_meets_it_unless_the_rollout_failed() -> None:
    assert overloadreport.checks(rollout(row("round-robin", 0)).rollout)[0][1] is True
    assert overloadreport.checks(rollout(row("round-robin", 0, ok=False)).rollout)[0][1] is False


def test_rows_side_by_side_in_the_table_with_the_expectation() -> None:
    table = report.markdown(rollout(row("hash", 26), row("round-robin", 0)))
    assert "under new-connection-per-request overload (wrk -c128" in table
    assert "- --balance hash: 26 failed of 105,598 requests (connect 0, read 26," in table
    assert "- --balance round-robin: 0 failed of 105,598 requests" in table
    assert "- met: steered rollout under overload, tcp_migrate_req=0: 0 failed: 0 failed" in table


def test_no_rows_no_lines_no_check() -> None:
    results = rollout()
    assert overloadreport.lines(results.rollout) == [] and overloadreport.checks(None) == []
