"""eBPF steering on the real engine: who gets new connections is the supervisor's decision.

What the code does (reuseport.steering + reuseport.kernel.steer): with `--balance
round-robin` (the default) an SK_REUSEPORT program attached to the port's reuseport group
picks each new connection's listener from a map that holds exactly the ready replicas.
These tests count, per replica, which one answered each NEW connection (Connection: close).
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reuseport.kernel import sockets
from tests.integration.conftest import (
    DEMO_IMAGE,
    Service,
    remove_test_containers,
    terminate,
    wait_for,
)
from tests.integration.strangers import (
    accepted,
    answered_by,
    connect_only,
    foreign_listener,
    keep_connecting,
)

pytestmark = pytest.mark.timeout(300)


def steered(service: Service, replicas: int) -> bool:
    rows = service.ps(missing_ok=True)
    members = [r for r in rows if r.get("member")]
    return len(members) == replicas


def test_round_robin_splits_new_connections_evenly(service: Service) -> None:
    result = service.cli(*service.up_args("--detach", replicas=4))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: steered(service, 4), timeout=30, what="4 replicas in the steering map")
    counts = service.spread(400)
    assert sorted(counts) == ["1", "2", "3", "4"], counts
    assert all(95 <= n <= 105 for n in counts.values()), counts  # +-5 %
    ps = service.cli("ps", service.name, timeout=30)
    assert "balance: round-robin" in ps.stdout, ps.stdout


def test_a_replica_awaiting_its_health_check_gets_no_connection(service: Service) -> None:
    # Replicas 1-3 pass at once; replica 4 only once /tmp/healthy exists in it.
    check = 'test "$REPLICA" -le 3 -o -e /tmp/healthy'
    up = service.cli(
        *service.up_args(
            "--detach",
            "--health-cmd",
            check,
            "--health-interval",
            "0.5",
            "--health-retries",
            "1000",  # replica 4 waits for its first pass, it is not replaced meanwhile
            replicas=3,
        )
    )
    assert up.returncode == 0, up.stderr
    assert service.cli("scale", service.name, "4", "--no-wait").returncode == 0
    wait_for(lambda: 4 in service.listening(), timeout=30, what="replica 4 listening")
    row = next(r for r in service.ps() if r["replica"] == 4)
    assert row["member"] is False and row["awaiting_health"], row
    counts = service.spread(200)
    assert "4" not in counts and sum(counts.values()) == 200, counts
    replica4 = service.replica_ids()[4]
    service.client.containers.get(replica4).exec_run(["touch", "/tmp/healthy"])
    wait_for(lambda: steered(service, 4), timeout=30, what="replica 4 admitted")
    assert service.spread(200).get("4", 0) >= 40


def test_a_foreign_listener_gets_nothing_while_steered(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    wait_for(lambda: steered(service, 2), timeout=30, what="2 replicas in the steering map")
    with foreign_listener(service.port) as stranger:
        counts = service.spread(200)
        assert accepted(stranger) == 0 and sum(counts.values()) == 200, counts
        ps = service.cli("ps", service.name, timeout=30)
        assert "steering shuts it out" in ps.stdout, ps.stdout


def test_a_stopped_replica_stops_receiving_within_a_second(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=3)).returncode == 0
    wait_for(lambda: steered(service, 3), timeout=30, what="3 replicas in the steering map")
    assert len(service.spread(30)) == 3  # a port with traffic, as under load
    pid = service.listening()[2]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        # Connections keep arriving; the stopped replica's queue fills with its share.
        keep_connecting(service.port, 1.0)
        # From here on no new connection may land on it: one that did would wait for the
        # hang window (5 s) and time out here.
        answered_by(service.port, 100, timeout_s=2)
        row = next(r for r in service.ps() if r["replica"] == 2 and r["pid"] == pid)
        assert row["member"] is False and row["out_why"], row
    finally:
        os.kill(pid, signal.SIGCONT)


def test_steering_survives_a_supervisor_restart(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=4)).returncode == 0
    wait_for(lambda: steered(service, 4), timeout=30, what="4 replicas in the steering map")
    (supervisor,) = service.containers(role="supervisor", all=False)
    # SIGKILL of its process from the host (a crash; `docker kill` would count as a manual
    # stop): its restart policy brings a fresh supervisor.
    os.kill(int(supervisor.attrs["State"]["Pid"]), signal.SIGKILL)
    with foreign_listener(service.port) as stranger:
        counts = service.spread(400)  # while no supervisor (or a new one) runs
        assert all(95 <= n <= 105 for n in counts.values()), counts
        assert accepted(stranger) == 0
    wait_for(
        lambda: service.cli("ps", service.name, timeout=30).stdout.count("supervisor: detached"),
        timeout=60,
        what="a supervisor back",
    )
    wait_for(lambda: steered(service, 4), timeout=60, what="members adopted")
    assert all(95 <= n <= 105 for n in service.spread(400).values())


def test_hash_balance_is_todays_behaviour(service: Service) -> None:
    assert (
        service.cli(*service.up_args("--detach", "--balance", "hash", replicas=2)).returncode == 0
    )
    rows = service.ps()
    assert all(r["member"] is None for r in rows), rows
    with foreign_listener(service.port) as stranger:
        connect_only(service.port, 200)
        assert accepted(stranger) > 0  # the kernel's hash gives it a share, as before


def test_without_the_capability_it_falls_back_to_the_hash_and_says_so(service: Service) -> None:
    # A foreground `up` whose process lacks CAP_SYS_ADMIN and CAP_BPF (dropped from the
    # bounding set, so the exec'd root process never has them).
    command = [
        "setpriv",
        "--bounding-set",
        "-sys_admin,-bpf",
        *service.runner.argv(*service.up_args(replicas=2)),
    ]
    process = subprocess.Popen(
        command, env=service.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: len(service.listening()) == 2, timeout=60, what="2 listening")
        assert sum(service.spread(40).values()) == 40
        rows = service.ps()
        assert all(r["member"] is None for r in rows), rows
    finally:
        _, err = terminate(process)
    lines = [line for line in err.splitlines() if "not available here" in line]
    assert len(lines) == 1, err
    assert "kernel's hash" in lines[0]


def test_a_third_party_app_is_steered_too(service: Service) -> None:
    """Debian's nginx with `listen PORT reuseport` (not our demo app)."""
    up = service.cli(*service.up_args("--detach", image="reuseport-nginx:test", replicas=3))
    assert up.returncode == 0, up.stderr
    wait_for(lambda: steered(service, 3), timeout=30, what="3 nginx replicas in the map")
    counts = service.spread(300)
    assert sorted(counts) == ["1", "2", "3"] and all(95 <= n <= 105 for n in counts.values())
    with foreign_listener(service.port) as stranger:
        assert sum(service.spread(100).values()) == 100
        assert accepted(stranger) == 0


STOP_TIMEOUT_S = 12  # how long a replica that ignores its stop signal stays up while stopped


@pytest.fixture(scope="module")
def stop_ignored_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """The demo image with SIGUSR2 as its stop signal (the app takes it for "healthy
    again"): a replica being stopped keeps listening until SIGKILL after --stop-timeout.
    Built offline from the local demo image; removed after the module's tests."""
    tag = f"reuseport-demo-stopignored:it-{secrets.token_hex(3)}"
    dockerfile = f"FROM {DEMO_IMAGE}\nSTOPSIGNAL SIGUSR2\n".encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, pull=False)
    try:
        yield tag
    finally:
        remove_test_containers(docker_client)
        docker_client.images.remove(tag, force=True)


def listens(pid: int, port: int) -> bool:
    """The kernel's word: process ``pid`` holds a listener of ``port``."""
    listeners = {f"socket:[{inode}]" for inode in sockets.listening_inodes(port)}
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    held = set()
    for fd in fds:
        try:
            held.add(os.readlink(fd))
        except FileNotFoundError:
            continue  # closed meanwhile
    return bool(listeners & held)


def stop_signal_sent(service: Service, container_id: str, since: int) -> bool:
    """`docker stop` has signalled the container: its drain is under way."""
    events = service.client.events(
        since=since,
        until=int(time.time()),
        filters={"container": container_id, "event": "kill"},
        decode=True,
    )
    return any(True for _ in events)


def draining_replica_share(service: Service, image: str, balance: str) -> dict[str, int]:
    """4 replicas scaled to 3: while replica 4 is being stopped (its stop signal ignored,
    so its app still runs and listens), who answers 200 new connections."""
    up = service.up_args(
        "--detach",
        "--balance",
        balance,
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        image=image,
        replicas=4,
    )
    assert service.cli(*up).returncode == 0
    if balance != "hash":
        wait_for(lambda: steered(service, 4), timeout=30, what="4 replicas in the steering map")
    assert len(service.spread(40)) == 4  # every replica answers before the scale
    draining_id = service.replica_ids()[4]
    pid = service.listening()[4]["pid"]
    since = int(time.time()) - 1
    assert service.cli("scale", service.name, "3", "--no-wait").returncode == 0
    wait_for(
        lambda: stop_signal_sent(service, draining_id, since),
        timeout=30,
        what="the stop signal sent to replica 4",
    )

    def row() -> dict[str, Any]:
        # One `ps` per look: replica 4 is killed STOP_TIMEOUT_S after its stop signal, and
        # on a busy CI host every `ps` is a second of that.
        rows = service.ps()
        found = [r for r in rows if r["replica"] == 4]
        assert found, rows
        return found[0]

    before = row()
    assert before["listening"] and listens(pid, service.port), before
    counts = service.spread(200)
    # Still listening after the last connection: every one of them had it to choose from.
    assert listens(pid, service.port)
    assert service.client.containers.get(draining_id).attrs["State"]["Running"]
    after = row()
    assert after["listening"], after
    if balance != "hash":
        assert after["member"] is False and after["out_why"] == "draining", after
    wait_for(
        lambda: 4 not in service.replica_ids(),
        timeout=STOP_TIMEOUT_S + 30,
        what="replica 4 stopped",
    )
    return counts


def test_a_draining_replica_gets_no_new_connection(
    stop_ignored_image: str, service: Service
) -> None:
    counts = draining_replica_share(service, stop_ignored_image, "round-robin")
    assert "4" not in counts and sum(counts.values()) == 200, counts


def test_with_the_hash_a_draining_replica_still_gets_its_share(
    stop_ignored_image: str, service: Service
) -> None:
    """The control: the kernel's hash knows nothing of the drain."""
    counts = draining_replica_share(service, stop_ignored_image, "hash")
    assert counts.get("4", 0) >= 20 and sum(counts.values()) == 200, counts
