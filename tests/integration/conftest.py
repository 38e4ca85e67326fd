"""Fixtures for tests against the real Docker engine: real containers, sockets and HTTP.

Every test gets its own service name (``it-...``), a free port and a private state dir;
containers of test services are removed by label before and after each test. An engine
that does not answer FAILS the suite (a skipped suite is not a pass): run
`scripts/ensure-docker` and `scripts/build-images` first, as `scripts/test` does.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from loadtest.harness.cli import ReuseportCli
from reuseport import host, labels

DEMO_IMAGE = "reuseport-demo:latest"
TEST_PREFIX = "it-"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here runs against the real engine: mark it so (`-m "not integration"`)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/ensure-docker", pytrace=False)
    for image in (DEMO_IMAGE, "reuseport:latest"):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} is missing; run scripts/build-images", pytrace=False)
    yield client
    client.close()


def remove_test_containers(client: docker.DockerClient) -> None:
    for container in client.containers.list(
        ignore_removed=True, all=True, filters={"label": f"{labels.MANAGED}=1"}
    ):
        if container.labels.get(labels.SERVICE, "").startswith(TEST_PREFIX):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: its removal is already in progress
                    raise


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Service:
    """One test service: its name, port, state dir, and a runner for the real CLI."""

    name: str
    port: int
    state_dir: Path
    client: docker.DockerClient

    @property
    def runner(self) -> ReuseportCli:
        """The one runner of the real CLI (shared with the benchmarks): this checkout's
        package, the test's own state dir, wide tables."""
        return ReuseportCli(self.state_dir, {"COLUMNS": "200"})

    @property
    def env(self) -> dict[str, str]:
        return self.runner.env

    def cli(
        self, *args: str, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.runner.run(*args, timeout=timeout, check=False, env=env)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return self.runner.popen(*args)

    def up_args(self, *extra: str, replicas: int = 2, image: str = DEMO_IMAGE) -> list[str]:
        return [
            "up",
            image,
            "--name",
            self.name,
            "--port",
            str(self.port),
            "-n",
            str(replicas),
            *extra,
        ]

    def ps(self, missing_ok: bool = False) -> list[dict[str, Any]]:
        result = self.cli("ps", self.name, "--json", timeout=30)
        if missing_ok and result.returncode == 4:  # not created yet (a foreground up starting)
            return []
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def listening(self) -> dict[int, dict[str, Any]]:
        return {row["replica"]: row for row in self.ps(missing_ok=True) if row["listening"]}

    def containers(self, role: str = labels.ROLE_REPLICA, all: bool = True) -> list[Any]:
        return self.client.containers.list(
            ignore_removed=True, all=all, filters={"label": labels.filters(self.name, role)}
        )

    def replica_ids(self) -> dict[int, str]:
        return {int(c.labels[labels.REPLICA]): c.id for c in self.containers(all=False)}

    def spread(self, connections: int = 100) -> dict[str, int]:
        """Which replica answered each of ``connections`` NEW connections."""
        counts: dict[str, int] = {}
        for _ in range(connections):
            response = httpx.get(
                f"http://127.0.0.1:{self.port}/", headers={"Connection": "close"}, timeout=10
            )
            response.raise_for_status()
            replica = response.headers["X-Replica"]
            counts[replica] = counts.get(replica, 0) + 1
        return counts


def top_output(service: Service, *args: str, seconds: float = 3) -> str:
    """What `reuseport top ARGS` shows in ``seconds``, then Ctrl-C (it must exit 0)."""
    top = subprocess.Popen(
        service.runner.argv("top", *args, "--interval", "0.5"),
        env=service.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(seconds)
        top.send_signal(signal.SIGINT)
        shown, errors = top.communicate(timeout=20)
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
    assert top.returncode == 0, errors
    return shown


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so a fixture can tell that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def print_supervisor_log(client: docker.DockerClient, name: str) -> None:
    """A failed test's service: its detached supervisor's log, the one record of what each
    pass saw and did (a rare CI failure cannot be explained without it)."""
    for container in client.containers.list(
        ignore_removed=True,
        all=True,
        filters={"label": [f"{labels.SERVICE}={name}", f"{labels.ROLE}={labels.ROLE_SUPERVISOR}"]},
    ):
        try:
            text = container.logs(tail=400).decode(errors="replace")
        except docker.errors.APIError:
            continue
        print(f"\n--- supervisor {container.name} (last 400 lines) ---\n{text}")


@pytest.fixture
def service(
    docker_client: docker.DockerClient, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Service]:
    remove_test_containers(docker_client)
    svc = Service(
        f"{TEST_PREFIX}{secrets.token_hex(3)}", free_port(), tmp_path / "state", docker_client
    )
    try:
        yield svc
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print_supervisor_log(docker_client, svc.name)
        # `down` first (it also stops a supervisor), then a label sweep for anything left.
        svc.cli("down", svc.name, timeout=60)
        remove_test_containers(docker_client)


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.1,
    what: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def terminate(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("reuseport: error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def migrate_req() -> Iterator[None]:
    """net.ipv4.tcp_migrate_req=1 for the test; the previous value is restored after."""
    before = host.tcp_migrate_req()
    if before is None:
        pytest.fail("this kernel lacks net.ipv4.tcp_migrate_req (Linux >= 5.14 needed)")
    host.TCP_MIGRATE_REQ.write_text("1\n")
    try:
        yield
    finally:
        host.TCP_MIGRATE_REQ.write_text(f"{before}\n")
