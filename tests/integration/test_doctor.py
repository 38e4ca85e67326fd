"""`reuseport doctor` against the real engine and kernel: the findings and the exit code."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reuseport import host
from tests.integration.conftest import TEST_PREFIX, Service, free_port, terminate, wait_for


@pytest.fixture
def service(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Service]:
    """A service name and free port of this test alone.

    Unlike conftest's fixture it sweeps only its own containers: doctor reads the whole
    host, and other test runs may share the engine meanwhile.
    """
    svc = Service(
        f"{TEST_PREFIX}doctor-{secrets.token_hex(3)}",
        free_port(),
        tmp_path / "state",
        docker_client,
    )
    try:
        yield svc
    finally:
        svc.cli("down", svc.name, timeout=60)
        for container in svc.containers():
            container.remove(force=True)


@pytest.fixture
def migrate_req() -> Iterator[Callable[[int], None]]:
    """Sets net.ipv4.tcp_migrate_req for the test; the previous value is restored after."""
    before = host.tcp_migrate_req()
    if before is None:
        pytest.fail("this kernel lacks net.ipv4.tcp_migrate_req (Linux >= 5.14 needed)")

    def set_to(value: int) -> None:
        host.TCP_MIGRATE_REQ.write_text(f"{value}\n")

    try:
        yield set_to
    finally:
        set_to(before)


def doctor(service: Service, *args: str) -> tuple[int, dict[str, Any]]:
    result = service.cli("doctor", "--json", *args, timeout=60)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    data = json.loads(result.stdout)
    assert data["blocking"] is (result.returncode != 0)
    return result.returncode, data


def by_check(data: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for finding in data["findings"]:
        found.setdefault(finding["check"], []).append(finding)
    return found


def test_healthy_host(service: Service, migrate_req: Callable[[int], None]) -> None:
    migrate_req(1)
    code, data = doctor(service, "--port", str(service.port))
    checks = by_check(data)
    assert code == 0, data
    # somaxconn is left out: it is the host's, not the test's, to set.
    for check in ("engine", "kernel", "tcp_migrate_req", "port", "uids"):
        assert [f["status"] for f in checks[check]] == ["ok"], checks[check]
    assert checks["engine"][0]["detail"].startswith("Docker ")
    assert "(API 1." in checks["engine"][0]["detail"]
    assert checks["port"][0]["detail"] == f"port {service.port} is free"
    assert checks["uids"][0]["detail"].startswith(f"doctor runs as uid {os.geteuid()}")

    human = service.cli("doctor", "--port", str(service.port), timeout=60)
    assert human.returncode == 0, human.stderr
    assert "✓" in human.stdout and "nothing stops `reuseport up`" in human.stdout


def test_tcp_migrate_req_off_is_a_warning_with_the_fix(
    service: Service, migrate_req: Callable[[int], None]
) -> None:
    migrate_req(0)
    code, data = doctor(service)
    (finding,) = by_check(data)["tcp_migrate_req"]
    assert code == 0
    assert finding["status"] == "warn" and "tcp_migrate_req=0" in finding["detail"]
    assert finding["fix"] == "sysctl -w net.ipv4.tcp_migrate_req=1"

    human = service.cli("doctor", timeout=60)
    assert human.returncode == 0
    assert "fix: sysctl -w net.ipv4.tcp_migrate_req=1" in human.stdout


def test_port_held_by_a_foreign_listener_blocks_and_names_the_pid(service: Service) -> None:
    port = free_port()
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stranger.bind(("0.0.0.0", port))
        stranger.listen()
        code, data = doctor(service, "--port", str(port))
        human = service.cli("doctor", "--port", str(port), timeout=60)
    (finding,) = by_check(data)["port"]
    assert code == 1
    assert finding["status"] == "fail"
    assert f"pid {os.getpid()} (" in finding["detail"]
    assert "with SO_REUSEPORT, which is not a replica of ours" in finding["detail"]
    assert finding["fix"] == f"kill {os.getpid()} (or choose another --port)"
    assert human.returncode == 1
    assert "✗" in human.stdout and "would stop `reuseport up`" in human.stdout


def test_replicas_of_ours_are_reported_as_ours(service: Service) -> None:
    process = service.popen(*service.up_args(replicas=2))
    try:
        wait_for(lambda: len(service.listening()) == 2, timeout=60, what="2 replicas listening")
        code, data = doctor(service, "--port", str(service.port))
    finally:
        _, err = terminate(process)
    assert process.returncode == 0, err
    checks = by_check(data)
    assert len(checks["port"]) == 1, checks  # no listener on its port but the replicas'
    (port,) = checks["port"]
    assert port["status"] == "ok", port
    assert f"is served by replicas of {service.name!r} (replica 1: pid " in port["detail"]
    assert f"replica {service.name}.1" in checks["uids"][0]["detail"]
    assert f"replica {service.name}.2" in checks["uids"][0]["detail"]
    assert code == 0, data


def test_engine_down_is_a_finding_not_a_traceback(service: Service) -> None:
    env = {**service.env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = service.cli("doctor", "--json", env=env, timeout=60)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == 1 and result.stderr == ""
    checks = by_check(json.loads(result.stdout))
    (engine,) = checks["engine"]
    assert engine["status"] == "fail"
    assert engine["detail"] == "no Docker engine answers at unix:///nonexistent/docker.sock"
    assert engine["fix"] == "scripts/ensure-docker (or systemctl start docker)"
    assert {"kernel", "tcp_migrate_req", "somaxconn", "uids"} <= checks.keys()
