from reuseport.engine.base import Replica
from reuseport.view import format_uptime, replica_rows


def replica(index: int, cid: str, state: str = "running") -> Replica:
    return Replica(
        id=cid * 8,
        name=f"demo.{index}",
        service="demo",
        index=index,
        state=state,
        pid=100 + index if state == "running" else 0,
        image="demo:1",
        spec_hash="h",
        spec_json="{}",
        restarts=1,
        started_at=1000.0,
    )


def test_rows_show_listening_pid_uptime_and_backoff() -> None:
    replicas = [replica(1, "aaaaaaaa"), replica(2, "bbbbbbbb")]
    slots = {"3": {"restarts": 4, "retry_at": 1012.5, "last_error": "exited with code 1"}}
    rows = replica_rows("demo", "demo:1", replicas, {"a" * 64: 555}, slots, desired=3, now=1010.0)
    assert [(r.replica, r.state, r.listening, r.pid) for r in rows] == [
        (1, "running", True, 555),
        (2, "running", False, 102),
        (3, "backoff", False, None),
    ]
    assert rows[0].container_id == "a" * 12 and rows[0].uptime_s == 10.0
    assert rows[2].retry_in_s == 2.5 and rows[2].restarts == 4
    assert rows[2].last_error == "exited with code 1"


def test_missing_index_without_backoff_is_pending() -> None:
    rows = replica_rows("demo", "demo:1", [], {}, {}, desired=1, now=0.0)
    assert rows[0].state == "pending" and rows[0].retry_in_s is None


def test_uptime_format() -> None:
    assert [format_uptime(s) for s in (None, 5, 65, 3700)] == ["-", "5s", "1m05s", "1h01m"]


def test_ready_counts_neither_failing_nor_health_pending_replicas() -> None:
    from reuseport.kernel.attribution import PortObservation, ReplicaSockets
    from reuseport.view import ServiceView

    replicas = [replica(1, "aaaaaaaa"), replica(2, "bbbbbbbb"), replica(3, "cccccccc")]
    ids = [r.id for r in replicas]
    port = PortObservation(
        8080,
        {
            ids[0]: ReplicaSockets(101, (1,), 0, 128, frozenset({7, 8, 9})),
            ids[1]: ReplicaSockets(102, (2,), 5, 128, frozenset({10})),
            ids[2]: ReplicaSockets(103, (3,), 0, 128, frozenset()),
        },
        (),
        True,
    )
    rows = replica_rows(
        "demo",
        "demo:1",
        replicas,
        port.listening,
        {},
        3,
        1010.0,
        port,
        failing={ids[1]: "hung: 5 connection(s) left in its accept queue for 5.0s"},
        awaiting_health={ids[2]},
    )
    view = ServiceView("demo", 8080, 3, tuple(rows), "none")
    assert view.ready == 1 and view.connections == 4
    assert [(r.connections, r.accept_queue, r.backlog, r.share) for r in rows] == [
        (3, 0, 128, 0.75),
        (1, 5, 128, 0.25),
        (0, 0, 128, 0.0),
    ]
    assert rows[1].failing.startswith("hung") and rows[2].awaiting_health
