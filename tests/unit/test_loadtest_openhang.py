"""The hang part's open-loop figures and checks (loadtest.hangopen, loadtest.openhangreport):
pure functions of the client's records."""

from __future__ import annotations

from loadtest import openhangreport
from loadtest.hangopen import lowest_over_median, open_figures
from loadtest.harness.openhang import OpenHangFigures
from loadtest.harness.results import HangResult


def records(stop_at: float, hurt_for: float, rate: int = 10, seconds: int = 6) -> dict:
    """``rate`` requests/s for ``seconds``; those sent in [stop_at, stop_at + hurt_for)
    every other one times out, the rest of them is slow."""
    rows = []
    for i in range(rate * seconds):
        sent = i / rate
        if stop_at <= sent < stop_at + hurt_for:
            rows.append([sent, None, "timeout"] if i % 2 else [sent, 2.5, ""])
        else:
            rows.append([sent, 0.001, ""])
    return {"started_at": 1000.0, "rate": rate, "timeout_s": 5, "requests": rows}


def test_open_figures_place_requests_around_the_sigstop() -> None:
    fig = open_figures(records(stop_at=2.0, hurt_for=1.5), stop_wall=1002.0, port=80)
    assert fig.requests == 60 and fig.failures + fig.slow == 15
    assert fig.failures_by_error == {"timeout": fig.failures}
    assert fig.hurt_until_s == 1.4  # the last hurt request was sent 1.4 s after the stop
    assert fig.hurt_later_than_1s == 4  # sent at 1.1 .. 1.4 s
    assert [s.t_s for s in fig.per_second] == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert lowest_over_median(fig.per_second) == 0.0  # second 0: none answered in time


def test_nothing_hurt_means_no_dip_and_no_hurt_time() -> None:
    fig = open_figures(records(stop_at=99.0, hurt_for=0.0), stop_wall=1002.0, port=80)
    assert fig.hurt_until_s is None and fig.failures == 0
    assert lowest_over_median(fig.per_second) == 1.0


def test_checks_count_failed_and_slow_and_the_hurt_time() -> None:
    hang = HangResult(
        open_loop={
            "reuseport": OpenHangFigures(failures=100, slow=800, hurt_until_s=5.6),
            "steered": OpenHangFigures(failures=81, slow=0, hurt_until_s=0.4),
        }
    )
    (share, until) = openhangreport.checks(hang)
    assert share[1] and until[1]
    hang.open_loop["steered"].failures = 300  # over a quarter of 900
    hang.open_loop["steered"].hurt_until_s = 1.2
    (share, until) = openhangreport.checks(hang)
    assert not share[1] and not until[1]
    assert openhangreport.checks(HangResult()) == []
