"""The Swarm convergence table: medians side by side, a fault never healed said as such."""

from __future__ import annotations

from loadtest.swarmconverge import EVENTS, ConvergeResult, table


def test_medians_side_by_side_with_the_ratio_and_never_for_a_hang_swarm_ignores() -> None:
    result = ConvergeResult(3, 2.0, 30.0)
    result.seconds = {
        "task killed": {"reuseport": [1.0, 1.2, 5.0], "plain": [1.1, 1.2, 1.3]},
        "task hung (SIGSTOP)": {"reuseport": [3.0, 3.2, 3.1], "plain": [None, None, None]},
        "node drained": {"reuseport": [4.0, 4.0, 4.0], "plain": [4.0, 8.0, 8.0]},
    }
    assert result.median("task killed", "reuseport") == 1.2
    assert result.median("task hung (SIGSTOP)", "plain") is None
    rows = table(result).splitlines()[2:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == list(EVENTS)
    assert rows[0] == "| task killed | 1.20 s | 1.20 s | 1.0x |"
    assert rows[1] == "| task hung (SIGSTOP) | 3.10 s | not in 30 s | never |"
    assert rows[2] == "| node drained | 4.00 s | 8.00 s | 2.0x |"
