"""`scale` changes the desired count and the supervisor converges; `logs` merges replicas."""

from __future__ import annotations

import subprocess
import sys
import threading

from tests.integration.conftest import Service, assert_one_line_error, terminate, wait_for


def test_scale_up_and_down_a_detached_service(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    result = service.cli("scale", service.name, "4")
    assert result.returncode == 0, result.stderr
    assert set(service.listening()) == {1, 2, 3, 4}  # scale waits for convergence
    assert set(service.spread(120)) == {"1", "2", "3", "4"}

    result = service.cli("scale", service.name, "1")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(service.containers()) == 1, timeout=30, what="surplus replicas removed")
    assert set(service.listening()) == {1}


def test_scale_reaches_a_foreground_supervisor(service: Service) -> None:
    process = service.popen(*service.up_args(replicas=1))
    try:
        wait_for(lambda: len(service.listening()) == 1, timeout=60, what="1 listening")
        result = service.cli("scale", service.name, "3")
        assert result.returncode == 0, result.stderr
        assert set(service.listening()) == {1, 2, 3}
    finally:
        out, err = terminate(process)
    assert "stopped and removed 3 replicas" in err


def test_scale_refuses_bad_counts_and_unknown_services(service: Service) -> None:
    assert_one_line_error(service.cli("scale", service.name, "0"), "between 1 and 256")
    assert_one_line_error(service.cli("scale", service.name, "300"), "between 1 and 256")
    assert_one_line_error(service.cli("scale", "it-nosuch", "2"), "no service named 'it-nosuch'")


def test_logs_are_merged_and_prefixed_with_the_replica(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=3)).returncode == 0
    result = service.cli("logs", service.name)
    assert result.returncode == 0, result.stderr
    for index in (1, 2, 3):
        assert any(
            line.startswith(f"{service.name}.{index} | replica {index} listening")
            for line in result.stdout.splitlines()
        ), result.stdout


def test_logs_follow_picks_up_a_replacement(service: Service) -> None:
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    follower = subprocess.Popen(
        [sys.executable, "-m", "reuseport", "logs", "-f", service.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=service.env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    marker = f"{service.name}.2 | replica 2 listening"
    try:
        wait_for(
            lambda: any(line.startswith(marker) for line in lines),
            timeout=30,
            what="first start line",
        )
        old = service.replica_ids()[2]
        service.client.containers.get(old).kill()
        # the original's start line and its replacement's
        wait_for(
            lambda: sum(line.startswith(marker) for line in lines) == 2,
            timeout=30,
            what="replacement's log",
        )
    finally:
        terminate(follower, timeout=10)


def test_logs_of_unknown_service_is_one_line(service: Service) -> None:
    assert_one_line_error(service.cli("logs", "it-nosuch"), "no replicas of 'it-nosuch'")
