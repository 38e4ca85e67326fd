"""Running `up` again with the same spec adopts running replicas without restarting them;
a different spec is refused with the differences and what to run instead."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import httpx

from reuseport.engine import connect
from reuseport.store import StateStore
from tests.integration.conftest import Service, assert_one_line_error, wait_for


def test_restarted_supervisor_adopts_replicas_without_restarting_them(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=3)).returncode == 0
    before = service.replica_ids()
    (supervisor,) = service.containers(role="supervisor", all=False)
    supervisor.remove(force=True)  # the supervisor dies; its replicas keep serving
    assert httpx.get(f"http://127.0.0.1:{service.port}/", timeout=5).status_code == 200

    again = service.cli(*service.up_args("--detach", replicas=3))
    assert again.returncode == 0, again.stderr
    assert "3 adopted" in again.stderr
    assert service.replica_ids() == before  # same containers: nothing was restarted
    assert len(service.containers(role="supervisor", all=False)) == 1
    # ...and the new supervisor really supervises them.
    service.client.containers.get(before[1]).kill()
    wait_for(
        lambda: service.replica_ids().get(1) not in (None, before[1]),
        timeout=30,
        what="replacement",
    )


def test_killed_foreground_up_is_adopted_by_a_detached_one(service: Service) -> None:
    process = service.popen(*service.up_args(replicas=2))
    try:
        wait_for(lambda: len(service.listening()) == 2, timeout=60, what="2 listening")
        before = service.replica_ids()
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to clean up: replicas stay
        process.communicate(timeout=30)
    assert service.replica_ids() == before
    result = service.cli(*service.up_args("--detach", replicas=2))
    assert result.returncode == 0, result.stderr
    assert service.replica_ids() == before


def test_adoption_can_change_the_count(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    before = service.replica_ids()
    service.containers(role="supervisor", all=False)[0].remove(force=True)
    result = service.cli(*service.up_args("--detach", replicas=3))
    assert result.returncode == 0, result.stderr
    after = service.replica_ids()
    assert after[1] == before[1] and after[2] == before[2] and 3 in after


def test_different_spec_is_refused_with_the_differences(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    before = service.replica_ids()
    result = service.cli(*service.up_args("--detach", "-e", "MODE=fast", replicas=2))
    assert_one_line_error(
        result, "different spec", "env MODE added", f"reuseport down {service.name}"
    )
    result = service.cli(*service.up_args("--detach", replicas=2, image="reuseport-demo:v2"))
    assert_one_line_error(result, "image: reuseport-demo:latest -> reuseport-demo:v2")
    assert service.replica_ids() == before


def test_second_foreground_up_is_refused_while_supervised(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    result = service.cli(*service.up_args(replicas=2))
    assert_one_line_error(result, "already supervised")


def test_supervisor_killed_on_the_host_is_restarted_by_docker_and_adopts(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    before = service.replica_ids()
    (supervisor,) = service.containers(role="supervisor", all=False)
    supervisor.reload()
    os.kill(supervisor.attrs["State"]["Pid"], signal.SIGKILL)  # not a manual stop: policy applies
    wait_for(
        lambda: (
            service.client.containers.get(supervisor.id).attrs["RestartCount"] >= 1
            and service.client.containers.get(supervisor.id).status == "running"
        ),
        timeout=30,
        what="supervisor restarted by Docker",
    )
    assert service.replica_ids() == before
    service.client.containers.get(before[2]).kill()
    wait_for(
        lambda: service.replica_ids().get(2) not in (None, before[2]),
        timeout=30,
        what="replacement",
    )
    wait_for(lambda: set(service.listening()) == {1, 2}, timeout=30, what="both listening")


def test_up_detached_again_hands_the_new_count_to_the_running_supervisor(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    (supervisor,) = service.containers(role="supervisor", all=False)
    before = service.replica_ids()
    result = service.cli(*service.up_args("--detach", replicas=3))
    assert result.returncode == 0, result.stderr
    assert set(service.listening()) == {1, 2, 3}
    after = service.replica_ids()
    assert after[1] == before[1] and after[2] == before[2]
    assert [c.id for c in service.containers(role="supervisor", all=False)] == [supervisor.id]


def test_a_replica_created_but_never_started_is_replaced_without_a_failure(
    service: Service,
) -> None:
    """A supervisor SIGKILLed between create and start leaves a container that never ran:
    its successor removes it and fills the index, with no restart or replacement counted."""
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    (supervisor,) = service.containers(role="supervisor", all=False)
    supervisor.remove(force=True)
    spec = StateStore(service.state_dir).load_spec(service.name)
    assert spec is not None
    interrupted = connect()
    interrupted._api.start = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    orphan = interrupted.create_replica(replace(spec, replicas=3), 3, 0)
    assert service.client.containers.get(orphan).status == "created"

    again = service.cli(*service.up_args("--detach", replicas=3))
    assert again.returncode == 0, again.stderr
    assert "created but never started" in again.stderr, again.stderr
    rows = service.ps()
    assert [(r["replica"], r["ready"], r["restarts"]) for r in rows] == [
        (1, True, 0),
        (2, True, 0),
        (3, True, 0),
    ]
    assert rows[0]["replacements"] == {}
    assert orphan not in {c.id for c in service.containers()}
