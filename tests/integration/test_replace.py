"""A replica that dies for any reason is replaced; crash loops back off; never more than N."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tests.integration.conftest import Service, wait_for


@pytest.fixture
def detached(service: Service) -> Service:
    # A short reset lets one test kill the same index twice without waiting 10 s.
    result = service.cli(*service.up_args("--detach", "--backoff-reset", "1", replicas=3))
    assert result.returncode == 0, result.stderr
    return service


def replaced(service: Service, index: int, old_id: str) -> bool:
    row = service.listening().get(index)
    return bool(row) and not old_id.startswith(row["container_id"])


def kill_host_process(service: Service, index: int) -> None:
    os.kill(service.listening()[index]["pid"], signal.SIGKILL)


def docker_kill(service: Service, index: int) -> None:
    service.client.containers.get(service.replica_ids()[index]).kill()


def docker_rm_f(service: Service, index: int) -> None:
    service.client.containers.get(service.replica_ids()[index]).remove(force=True)


APP_EXITS = (
    "import os, signal\n"
    "for pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
    "    if pid not in (1, os.getpid()):\n"
    "        os.kill(pid, signal.SIGTERM)\n"
)


def app_exits_by_itself(service: Service, index: int) -> None:
    # The app ends on its own (here: it drains and exits 0): a server that exits is dead too.
    container = service.client.containers.get(service.replica_ids()[index])
    assert container.exec_run(["python3", "-c", APP_EXITS]).exit_code == 0


@pytest.mark.parametrize(
    "death",
    [kill_host_process, docker_kill, docker_rm_f, app_exits_by_itself],
    ids=lambda f: f.__name__,
)
def test_dead_replica_is_replaced_and_listens_again(detached: Service, death) -> None:  # noqa: ANN001
    service = detached
    before = service.replica_ids()
    seen_running: list[int] = []
    stop = threading.Event()

    def watch_count() -> None:
        while not stop.is_set():
            seen_running.append(len(service.containers(all=False)))

    watcher = threading.Thread(target=watch_count)
    watcher.start()
    try:
        death(service, 2)
        wait_for(lambda: replaced(service, 2, before[2]), timeout=30, what="replica 2 replaced")
    finally:
        stop.set()
        watcher.join()
    assert max(seen_running) <= 3, "more replicas than desired ran at some point"
    after = service.replica_ids()
    assert after[1] == before[1] and after[3] == before[3]
    row = service.listening()[2]
    assert row["restarts"] == 1
    assert set(service.spread(60)) == {"1", "2", "3"}


def test_crash_loop_backs_off_and_ps_shows_the_retry(service: Service) -> None:
    result = service.cli(
        *service.up_args("--detach", "--backoff-initial", "3", "--backoff-max", "3", replicas=2)
    )
    assert result.returncode == 0, result.stderr
    first = service.replica_ids()[1]
    kill_host_process(service, 1)
    wait_for(lambda: replaced(service, 1, first), timeout=30, what="first replacement (immediate)")
    kill_host_process(service, 1)  # second failure inside the reset window: backoff
    row = wait_for(
        lambda: next(
            (r for r in service.ps() if r["replica"] == 1 and r["state"] == "backoff"), None
        ),
        timeout=10,
        what="replica 1 in backoff",
    )
    assert 0 < row["retry_in_s"] <= 3
    assert "signal 9" in row["last_error"]
    table = service.cli("ps", service.name).stdout
    assert "retry in" in table
    wait_for(lambda: 1 in service.listening(), timeout=30, what="replica 1 back after backoff")
    assert service.listening()[1]["restarts"] == 2
