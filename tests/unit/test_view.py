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
