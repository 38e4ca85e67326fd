"""The kernel view of the port: `ps --json`, `/metrics` and `doctor` agree, and a foreign
listener that joins the port is flagged everywhere and never touched."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reuseport import labels
from tests.integration.conftest import Service, assert_one_line_error, free_port, wait_for


def scrape(port: int) -> dict[str, list[Any]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    for sample in samples.get(name, []):
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


@pytest.fixture
def keepalive_connections(service: Service) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for conn in opened:
        conn.close()


def open_idle_connections(port: int, count: int, into: list[socket.socket]) -> None:
    """Connections that made one request and stay open, idle: a stable count to compare."""
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200")
        into.append(conn)


def test_metrics_numbers_match_ps_json(
    service: Service, keepalive_connections: list[socket.socket]
) -> None:
    metrics_port = free_port()
    result = service.cli(
        *service.up_args("--detach", "--metrics-port", str(metrics_port), replicas=3)
    )
    assert result.returncode == 0, result.stderr
    # One death, so restarts and replacements are not all zero.
    victim = service.replica_ids()[1]
    service.client.containers.get(victim).kill()
    wait_for(
        lambda: len(service.listening()) == 3 and victim not in service.replica_ids().values(),
        what="replica 1 replaced",
    )
    open_idle_connections(service.port, 7, keepalive_connections)

    def agree() -> tuple[list[dict[str, Any]], dict[str, list[Any]]] | None:
        rows = service.ps()
        samples = scrape(metrics_port)
        name = service.name
        replicas = [r for r in rows if r["state"] == "running"]
        checks = [
            value(samples, "reuseport_replicas_desired", service=name) == rows[0]["desired"],
            value(samples, "reuseport_replicas_ready", service=name) == rows[0]["ready_replicas"],
            value(samples, "reuseport_replacements_total", service=name, reason="exited")
            == rows[0]["replacements"].get("exited", 0),
            value(samples, "reuseport_foreign_listeners", service=name)
            == rows[0]["foreign_listeners"],
            sum(r["connections"] for r in replicas) == 7,
        ]
        for row in replicas:
            index = str(row["replica"])
            checks += [
                value(samples, "reuseport_replica_connections", service=name, replica=index)
                == row["connections"],
                value(samples, "reuseport_replica_accept_queue", service=name, replica=index)
                == row["accept_queue"],
                value(samples, "reuseport_replica_restarts_total", service=name, replica=index)
                == row["restarts"],
            ]
        return (rows, samples) if all(checks) else None

    # The supervisor reads the port every resync (1 s): allow a few for the two to settle.
    rows, samples = wait_for(agree, timeout=10, interval=0.5, what="/metrics to match ps --json")
    assert rows[0]["replacements"] == {"exited": 1}
    assert sum(r["restarts"] for r in rows) == 1
    assert value(samples, "reuseport_replicas_ready", service=service.name) == 3


def test_a_foreign_listener_is_flagged_in_ps_doctor_and_metrics_and_left_alone(
    service: Service,
) -> None:
    metrics_port = free_port()
    result = service.cli(*service.up_args("--detach", "--metrics-port", str(metrics_port)))
    assert result.returncode == 0, result.stderr
    before = service.replica_ids()
    intruder = socket.socket()
    try:
        # Same uid (root), SO_REUSEPORT, same address: the kernel puts it in the group.
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        intruder.bind(("0.0.0.0", service.port))
        intruder.listen(16)
        me = os.getpid()

        def flagged_in_ps() -> dict[str, Any] | None:
            rows = [r for r in service.ps() if r["state"] == "foreign"]
            return rows[0] if rows and rows[0]["pid"] == me else None

        row = wait_for(flagged_in_ps, timeout=3, interval=0.2, what="ps to flag it")
        assert row["uid"] == 0 and row["foreign_listeners"] == 1
        table = service.cli("ps", service.name).stdout
        assert "foreign listener" in table and f"pid {me}" in table

        # The supervisor's view (metrics) within one resync.
        samples = wait_for(
            lambda: (
                (s := scrape(metrics_port))
                and value(s, "reuseport_foreign_listeners", service=service.name) == 1
                and s
            ),
            timeout=3,
            interval=0.2,
            what="metrics to flag it",
        )
        assert value(samples, "reuseport_foreign_listener_info", pid=str(me)) == 1

        doctor = service.cli("doctor", "--port", str(service.port), "--json")
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr
        report = json.loads(doctor.stdout)
        text = json.dumps(report)
        assert f"{me}" in text and report["blocking"] is True

        (supervisor,) = service.containers(labels.ROLE_SUPERVISOR, all=False)
        assert "foreign listener" in supervisor.logs().decode()  # its own log says so too
        # Never touched: still listening, and the replicas were left as they were.
        assert intruder.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert service.replica_ids() == before
    finally:
        intruder.close()
    wait_for(
        lambda: not [r for r in service.ps() if r["state"] == "foreign"],
        what="the flag to clear once it closed",
    )


def test_top_refreshes_the_kernel_view_until_interrupted(service: Service) -> None:
    result = service.cli(*service.up_args("--detach"))
    assert result.returncode == 0, result.stderr
    before = service.replica_ids()
    # A terminal, as a person runs it: rich redraws the table in place on each refresh.
    primary, secondary = os.openpty()
    top = subprocess.Popen(
        [sys.executable, "-m", "reuseport", "top", service.name, "--interval", "0.3"],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.PIPE,
        env=service.env,
    )
    os.close(secondary)
    screen = bytearray()

    def read_for(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if select.select([primary], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    screen.extend(os.read(primary, 65536))

    try:
        read_for(1.5)
        first = bytes(screen)
        # A replica replaced while top runs: only a later frame can show its successor.
        service.client.containers.get(before[1]).kill()
        wait_for(lambda: service.replica_ids().get(1) not in (None, before[1]), timeout=30)
        successor = service.replica_ids()[1]
        read_for(2.0)
        top.send_signal(signal.SIGINT)
        _, err = top.communicate(timeout=10)
        read_for(0.2)
    finally:
        if top.poll() is None:
            top.kill()
        os.close(primary)
    text = screen.decode(errors="replace")
    assert top.returncode == 0, err
    assert "CONNS" in first.decode(errors="replace") and f":{service.port}" in text
    assert "QUEUE" in text and "SHARE" in text
    assert successor[:12] not in first.decode(errors="replace")
    assert successor[:12] in text  # a later frame, read from the engine and the kernel

    missing = service.cli("top", "it-no-such-service")
    assert_one_line_error(missing, "no service named")
    assert missing.returncode == 4
