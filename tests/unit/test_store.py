from pathlib import Path

from reuseport.spec import ServiceSpec
from reuseport.store import StateStore

SPEC = ServiceSpec(name="demo", image="demo:1", replicas=3, port=9000, env=(("A", "1"),))


def test_spec_round_trip_and_scale(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load_spec("demo") is None
    store.save_spec(SPEC)
    assert store.load_spec("demo") == SPEC
    store.save_spec(SPEC.with_replicas(5))
    assert store.load_spec("demo").replicas == 5  # type: ignore[union-attr]
    assert store.names() == ["demo"]


def test_forget_removes_both_files_and_no_temp_files_remain(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_spec(SPEC)
    store.save_status("demo", {"desired": 3})
    assert store.load_status("demo") == {"desired": 3}
    store.forget("demo")
    assert list(tmp_path.iterdir()) == []
    assert store.load_status("demo") == {}


def test_unreadable_status_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / "demo.status.json").write_text("{half")
    assert StateStore(tmp_path).load_status("demo") == {}
