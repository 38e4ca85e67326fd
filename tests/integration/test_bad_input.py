"""Bad input: one clear line on stderr, exit code != 0, no traceback, nothing left behind."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from reuseport.kernel import sockets as kernel
from tests.integration.conftest import Service, assert_one_line_error


@contextlib.contextmanager
def reuseport_listener(port: int) -> Iterator[socket.socket]:
    """A SO_REUSEPORT listener held by this test process (uid 0) on ``port``."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen()
        yield listener


def nothing_left(service: Service) -> None:
    assert service.containers() == [] and service.containers(role="supervisor") == []
    assert list(service.state_dir.glob(f"{service.name}.*")) == []


def test_no_engine_says_how_to_start_one(service: Service) -> None:
    env = {**service.env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    for args in (service.up_args(), ["ps"], ["down", service.name]):
        result = service.cli(*args, env=env)
        assert_one_line_error(result, "no Docker engine answers", "scripts/ensure-docker")
        assert result.returncode == 3


def test_missing_image_fails_at_once_without_pulling(service: Service) -> None:
    started = time.monotonic()
    result = service.cli(*service.up_args(image="reuseport-nosuch:1"))
    assert_one_line_error(result, "'reuseport-nosuch:1' is not present locally", "never pulls")
    assert time.monotonic() - started < 30  # generous: a pull attempt would hang far longer
    nothing_left(service)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-n", "0"], "replicas must be between 1 and 256, got 0"),
        (["-n", "257"], "replicas must be between 1 and 256, got 257"),
        (["-n", "many"], "Invalid value for '--replicas'"),
        (["-p", "0"], "port must be between 1 and 65535, got 0"),
        (["-p", "70000"], "port must be between 1 and 65535, got 70000"),
        (["-e", "NOEQUALS"], "malformed -e 'NOEQUALS'"),
        (["-e", "1BAD=x"], "malformed -e '1BAD=x'"),
        (["-e", "PORT=1"], "reserved"),
        (["--user", "a:b:c"], "--user must be"),
        (["--name", "bad name"], "invalid service name"),
    ],
)
def test_invalid_values_are_one_line(service: Service, args: list[str], fragment: str) -> None:
    base = ["up", "reuseport-demo:latest", "--name", service.name, "-p", str(service.port)]
    result = service.cli(*base, *args)
    assert_one_line_error(result, fragment)
    assert result.returncode == 2
    nothing_left(service)


@pytest.fixture
def plain_listener(service: Service) -> Iterator[subprocess.Popen[str]]:
    """Another program holds the port WITHOUT SO_REUSEPORT."""
    code = (
        "import socket,sys,time;s=socket.socket();"
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f"s.bind(('0.0.0.0',{service.port}));s.listen();print('ready',flush=True);time.sleep(300)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    try:
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_port_held_by_a_plain_listener_names_its_pid_and_program(
    service: Service, plain_listener: subprocess.Popen[str]
) -> None:
    result = service.cli(*service.up_args())
    assert_one_line_error(
        result, f"pid {plain_listener.pid} (python", "not in a SO_REUSEPORT group"
    )
    assert result.returncode == 5
    nothing_left(service)


def test_port_shared_by_a_foreign_reuseport_listener_is_refused(service: Service) -> None:
    with reuseport_listener(service.port):
        result = service.cli(*service.up_args())
    assert_one_line_error(result, f"pid {os.getpid()}", "would take a share of its connections")
    nothing_left(service)


def test_app_without_so_reuseport_is_diagnosed_not_crash_looped(service: Service) -> None:
    started = time.monotonic()
    result = service.cli(*service.up_args("-e", "REUSEPORT=0", replicas=3))
    assert_one_line_error(result, "must set SO_REUSEPORT")
    assert result.returncode == 5
    assert time.monotonic() - started < 60
    nothing_left(service)


def test_replicas_under_another_uid_than_the_port_holder_are_refused(service: Service) -> None:
    # This test process (uid 0) already has a SO_REUSEPORT listener; replicas as uid 1000
    # could never join its group.
    with reuseport_listener(service.port):
        result = service.cli(*service.up_args("--user", "1000"))
    assert_one_line_error(
        result, "as uid 0 but replicas would run as uid 1000", "one effective uid"
    )
    nothing_left(service)


def test_user_unknown_to_the_image_is_refused(service: Service) -> None:
    result = service.cli(*service.up_args("--user", "nosuchuser"))
    assert_one_line_error(result, "'nosuchuser' does not exist in image")
    nothing_left(service)


def test_app_that_crashes_at_start_reports_its_last_log_line(service: Service) -> None:
    # An unprivileged user cannot bind a privileged port: the app dies with an error.
    port = next(p for p in range(1000, 1024) if not kernel.listening_inodes(p))
    privileged = Service(service.name, port, service.state_dir, service.client)
    result = privileged.cli(*privileged.up_args("--user", "65534:65534", replicas=1))
    assert_one_line_error(
        result, "replica 1 exited with code", f"before listening on port {port}", "last log line"
    )
    nothing_left(service)


def test_down_of_unknown_service_is_one_line(service: Service) -> None:
    assert_one_line_error(service.cli("down", "it-nosuch"), "no service named 'it-nosuch'")
    assert_one_line_error(service.cli("ps", "it-nosuch"), "no service named 'it-nosuch'")
