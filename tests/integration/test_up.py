"""`up` in the foreground and detached: replicas listen (kernel-proven), share the port,
and leave nothing behind when stopped."""

from __future__ import annotations

import json
import threading

import httpx

from reuseport.kernel import sockets as kernel
from tests.integration.conftest import Service, terminate, wait_for

PS_KEYS = {
    "service",
    "replica",
    "container_id",
    "state",
    "listening",
    "pid",
    "restarts",
    "uptime_s",
    "image",
}


def test_foreground_up_serves_balances_and_cleans_up_on_sigterm(service: Service) -> None:
    process = service.popen(*service.up_args(replicas=3))
    try:
        wait_for(lambda: len(service.listening()) == 3, timeout=60, what="3 listening replicas")
        rows = service.ps()
        assert {row["replica"] for row in rows} == {1, 2, 3}
        for row in rows:
            assert row.keys() >= PS_KEYS
            assert row["state"] == "running" and row["image"] == "reuseport-demo:latest"
            assert row["service"] == service.name and row["restarts"] == 0

        # The kernel shows one listener per replica, each owned by that replica's container.
        owners = {listener.container_id for listener in kernel.listeners(service.port)}
        assert owners == set(service.replica_ids().values())

        counts = service.spread(150)
        assert set(counts) == {"1", "2", "3"}, counts
    finally:
        out, err = terminate(process)
    assert process.returncode == 0, err
    assert "stopped and removed 3 replicas" in err
    assert service.containers() == []
    assert kernel.listeners(service.port) == []
    assert not (service.state_dir / f"{service.name}.spec.json").exists()


def test_detached_up_returns_once_listening_and_down_removes_everything(service: Service) -> None:
    result = service.cli(*service.up_args("--detach", replicas=2))
    assert result.returncode == 0, result.stderr
    # Returned only once all replicas listen: no waiting needed here.
    assert {row["replica"] for row in service.ps() if row["listening"]} == {1, 2}
    assert len(service.containers(role="supervisor", all=False)) == 1
    assert set(service.spread(60)) == {"1", "2"}

    listed = service.cli("ps", "--json")
    assert service.name in {row["service"] for row in json.loads(listed.stdout)}
    table = service.cli("ps", service.name)
    assert "2/2 ready" in table.stdout and "detached" in table.stdout

    down = service.cli("down", service.name)
    assert down.returncode == 0, down.stderr
    assert service.containers() == [] and service.containers(role="supervisor") == []
    assert kernel.listeners(service.port) == []
    assert list(service.state_dir.glob(f"{service.name}.*")) == []


def test_app_gets_port_and_replica_env_and_user_env(service: Service) -> None:
    result = service.cli(*service.up_args("--detach", "-e", "GREETING=hi there", replicas=2))
    assert result.returncode == 0, result.stderr
    for container in service.containers(all=False):
        env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
        assert env["PORT"] == str(service.port)
        assert env["REPLICA"] == container.labels["io.reuseport.replica"]
        assert env["GREETING"] == "hi there"
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")


def test_down_stops_a_foreground_supervisor_from_another_shell(service: Service) -> None:
    process = service.popen(*service.up_args(replicas=2))
    try:
        wait_for(lambda: len(service.listening()) == 2, timeout=60, what="2 listening")
        down = service.cli("down", service.name)
        assert down.returncode == 0, down.stderr
        process.wait(timeout=30)  # the foreground `up` ends by itself
    finally:
        out, err = terminate(process)
    assert process.returncode == 0, err
    assert "taken down elsewhere" in err
    assert service.containers() == []


def test_containers_without_our_labels_are_never_touched(service: Service) -> None:
    # A look-alike: same naming scheme and image, but not labelled by reuseport.
    stranger = service.client.containers.create(
        "reuseport-demo:latest",
        name=f"{service.name}.1.000000",
        environment={"PORT": "1"},
        labels={"io.reuseport.service": service.name},
    )
    try:
        assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
        assert stranger.id not in service.replica_ids().values()
        assert service.cli("down", service.name).returncode == 0
        stranger.reload()
        assert stranger.status == "created"
    finally:
        stranger.remove(force=True)


def test_down_is_graceful_in_flight_requests_finish(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    results: list[int] = []
    errors: list[Exception] = []

    def slow_request() -> None:
        try:
            with httpx.Client(timeout=30) as client:
                results.append(client.get(f"http://127.0.0.1:{service.port}/sleep?s=5").status_code)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            errors.append(exc)

    requests = [threading.Thread(target=slow_request) for _ in range(4)]
    for thread in requests:
        thread.start()
    # Stop only once the replicas hold all four connections (accepted, not just queued):
    # the kernel view in `ps` counts an accepted connection by its socket in a replica.
    # The requests outlast the supervisor's 2 s between passes on a port that was idle,
    # so a read is sure to see them while they are in flight.
    wait_for(
        lambda: sum(row["connections"] or 0 for row in service.ps()) >= 4,
        timeout=15,
        what="the replicas to accept the four slow requests",
    )
    down = service.cli("down", service.name)
    for thread in requests:
        thread.join(timeout=30)
    assert down.returncode == 0, down.stderr
    assert errors == [] and results == [200] * 4
    assert service.containers() == []
