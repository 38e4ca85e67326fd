import contextlib
import fcntl
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from reuseport.errors import ServiceNotFound, SpecConflict, StateUnreadable, SupervisorConflict
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


def test_files_are_private_in_a_private_directory_that_is_tightened(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)  # as older versions left it
    store = StateStore(root)
    store.save_spec(SPEC)
    store.save_status("demo", {"desired": 3})
    store.save_history("demo", [])
    store.acquire_lease("demo", "test").release()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for path in root.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_every_file_carries_the_schema_version(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_spec(SPEC)
    store.save_status("demo", {"desired": 3})
    store.save_history("demo", [{"revision": 1}])
    for kind in ("spec", "status", "history"):
        assert json.loads((tmp_path / f"demo.{kind}.json").read_text())["schema_version"] == 1
    assert store.load_status("demo") == {"desired": 3}  # the key is the store's, not the data's
    assert store.load_history("demo") == [{"revision": 1}]


def test_a_file_without_a_version_is_version_1(tmp_path: Path) -> None:
    (tmp_path / "demo.spec.json").write_text(SPEC.to_json())
    (tmp_path / "demo.history.json").write_text('{"revisions": [{"revision": 1}]}')
    store = StateStore(tmp_path)
    assert store.load_spec("demo") == SPEC
    assert store.load_history("demo") == [{"revision": 1}]


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("", "empty"),
        ('{"name": "demo", "ima', "corrupt or truncated"),
        ("[1, 2]", "a JSON list, not an object"),
        ('{"name": "demo"}', "unreadable"),  # no image: not a valid spec
        ('{"schema_version": 2, "name": "demo", "image": "x"}', "newer than this reuseport"),
        ('{"schema_version": "x", "name": "demo", "image": "x"}', "invalid schema version"),
    ],
)
def test_an_unreadable_spec_raises_naming_the_file_and_never_reads_as_gone(
    tmp_path: Path, text: str, what: str
) -> None:
    path = tmp_path / "demo.spec.json"
    path.write_text(text)
    with pytest.raises(StateUnreadable, match=what) as raised:
        StateStore(tmp_path).load_spec("demo")
    assert str(path) in str(raised.value)
    assert raised.value.exit_code == 9


def test_an_unreadable_history_raises_instead_of_losing_the_revisions(tmp_path: Path) -> None:
    (tmp_path / "demo.history.json").write_text('{"revisions": [{"rev')
    with pytest.raises(StateUnreadable, match="demo.history.json"):
        StateStore(tmp_path).load_history("demo")
    assert StateStore(tmp_path).load_history("other") == []


def test_an_unreadable_status_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "demo.status.json").write_text('{"schema_version": 7}')
    store = StateStore(tmp_path)
    assert store.load_status("demo") == {}
    assert store.load_status("demo") == {}
    assert [r.getMessage() for r in caplog.records if "newer" in r.getMessage()] == [
        f"state file {tmp_path / 'demo.status.json'} has schema version 7, newer than this "
        "reuseport reads (1): upgrade reuseport; reading it as empty"
    ]


def test_write_leaves_no_temp_file_and_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store = StateStore(tmp_path)
    store.save_spec(ServiceSpec(name="demo", image="demo:1", replicas=1, port=18080))
    assert len(synced) == 2  # the file, then the directory
    store.save_status("demo", {"a": 1})
    assert len(synced) == 2  # a status is a cache rewritten every few seconds: not synced
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file


def test_lease_is_exclusive_names_its_holder_and_frees_on_release(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.lease_owner("demo") is None
    lease = store.acquire_lease("demo", "foreground pid 123")
    assert lease.held
    assert store.lease_owner("demo") == "foreground pid 123"
    with pytest.raises(SupervisorConflict, match="already supervised by foreground pid 123") as c:
        StateStore(tmp_path).acquire_lease("demo", "container abc")
    assert c.value.exit_code == 6 and isinstance(c.value, SpecConflict)
    assert store.lease_owner("other") is None  # leases are per service
    lease.release()
    lease.release()  # idempotent
    assert store.lease_owner("demo") is None
    with store.acquire_lease("demo", "container abc") as second:
        assert store.lease_owner("demo") == "container abc"
    assert not second.held


@contextlib.contextmanager
def held_by_child(root: Path, owner: str) -> Iterator[None]:
    """Another process holding the lease (as a detached supervisor would)."""
    code = (
        "import sys, time; from pathlib import Path; from reuseport.store import StateStore;"
        f"StateStore(Path({str(root)!r})).acquire_lease('demo', {owner!r});"
        "print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        yield
    finally:
        child.kill()
        child.wait()


def test_lease_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with held_by_child(tmp_path, "child"):
        assert store.lease_owner("demo") == "child"
        with pytest.raises(SupervisorConflict, match="by child"):
            store.acquire_lease("demo", "parent")
    assert store.lease_owner("demo") is None
    store.acquire_lease("demo", "parent").release()


def test_a_probe_does_not_make_an_acquire_fail(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.acquire_lease("demo", "first").release()
    path = tmp_path / "demo.lease"
    probe = os.open(path, os.O_RDWR)
    fcntl.flock(probe, fcntl.LOCK_SH)  # what lease_owner holds for a moment
    threading.Timer(0.05, os.close, [probe]).start()
    store.acquire_lease("demo", "second").release()


def test_forget_keeps_a_lease_held_elsewhere_so_the_next_acquirer_still_meets_it(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    store.save_spec(SPEC)
    with held_by_child(tmp_path, "supervisor"):
        store.forget("demo")
        assert [p.name for p in tmp_path.iterdir()] == ["demo.lease"]
        with pytest.raises(SupervisorConflict):
            store.acquire_lease("demo", "second")
    store.forget("demo")  # free now: removed
    assert list(tmp_path.iterdir()) == []


def test_forget_by_the_lease_holder_leaves_nothing_behind(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_spec(SPEC)
    lease = store.acquire_lease("demo", "foreground pid 1")
    StateStore(tmp_path).forget("demo")  # e.g. a failed `up` removing what it created
    assert list(tmp_path.iterdir()) == []
    lease.release()
    assert list(tmp_path.iterdir()) == []


def test_update_spec_without_a_spec_is_service_not_found(tmp_path: Path) -> None:
    with pytest.raises(ServiceNotFound, match="'demo'"):
        StateStore(tmp_path).update_spec("demo", lambda spec: spec)


def test_concurrent_update_spec_never_loses_a_change(tmp_path: Path) -> None:
    """Writers in threads each add one replica, widening the read-write window with a
    sleep; without the lock most increments would be lost."""
    store = StateStore(tmp_path)
    store.save_spec(SPEC.with_replicas(1))

    def grow(spec: ServiceSpec) -> ServiceSpec:
        time.sleep(0.01)
        return spec.with_replicas(spec.replicas + 1)

    writers = [
        threading.Thread(target=StateStore(tmp_path).update_spec, args=("demo", grow))
        for _ in range(20)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert store.load_spec("demo").replicas == 21  # type: ignore[union-attr]
    assert store.update_spec("demo", lambda s: replace(s, image="demo:2")).image == "demo:2"
    assert store.load_spec("demo").replicas == 21  # type: ignore[union-attr]
