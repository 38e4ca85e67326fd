"""The throughput setups' names: the tool's services keep the bench's ``-<pid>`` ending."""

from loadtest import setups


def test_tool_service_names_end_in_the_pid_for_the_stale_sweep() -> None:
    assert setups.tool_service("bench-tp-ab12cd-4242", "steered") == "bench-tp-ab12cd-steered-4242"
    assert setups.tool_service("bench-tp-ab12cd-4242", "least-conn").endswith("-4242")


def test_every_tool_setup_names_its_balance_and_only_least_conn_is_not_a_row() -> None:
    assert setups.BALANCES == {
        "reuseport": "hash",
        "steered": "round-robin",
        "least-conn": "least-conn",
    }
    assert set(setups.STARTABLE) - set(setups.NAMES) == {"least-conn"}
