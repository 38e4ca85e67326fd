"""A project file (reuseport.toml) applied on the real engine: two services come up, an
edited count scales without touching other replicas, an edited image rolls out under load
with no failed request, an unchanged file restarts nothing, an edited supervisor setting is
followed without a restart, logs and top without a name show every service of the file, and
`down -f` leaves nothing."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest

import reuseport
from reuseport.status import ServiceStatus
from reuseport.store import StateStore
from tests.integration.conftest import (
    TEST_PREFIX,
    Service,
    free_port,
    remove_test_containers,
    top_output,
    wait_for,
)
from tests.integration.load import Load


@dataclass
class Project:
    path: Path
    web: Service
    api: Service

    def write(
        self, web_image: str = "reuseport-demo:v1", web_replicas: int = 2, web_more: str = ""
    ) -> None:
        self.path.write_text(
            f"""# two services on two ports
[services.{self.web.name}]
image = "{web_image}"
replicas = {web_replicas}
port = {self.web.port}
env = {{ GREETING = "${{GREETING:-hello}}" }}
min-ready = 0.5
{web_more}

[services.{self.api.name}]
image = "reuseport-demo:v1"
replicas = 1
port = {self.api.port}
"""
        )

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.web.cli(*args, timeout=timeout)

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        result = self.cli("up", "-f", str(self.path), *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def in_dir(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``reuseport ARGS`` run in the file's directory, without -f (this checkout's
        package on the path: the directory is not the checkout)."""
        checkout = str(Path(reuseport.__file__).resolve().parent.parent)
        return subprocess.run(
            self.web.runner.argv(*args),
            cwd=self.path.parent,
            env={**self.web.env, "PYTHONPATH": checkout},
            capture_output=True,
            text=True,
            timeout=180,
        )

    def ids_and_restarts(self) -> dict[str, tuple[str, int]]:
        rows = json.loads(self.cli("ps", "-f", str(self.path), "--json").stdout)
        return {
            f"{row['service']}.{row['replica']}": (row["container_id"], row["restarts"])
            for row in rows
        }


@pytest.fixture
def project(docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Project]:
    remove_test_containers(docker_client)
    state, tag = tmp_path / "state", secrets.token_hex(3)
    web = Service(f"{TEST_PREFIX}{tag}-web", free_port(), state, docker_client)
    api = Service(f"{TEST_PREFIX}{tag}-api", free_port(), state, docker_client)
    made = Project(tmp_path / "reuseport.toml", web, api)
    try:
        yield made
    finally:
        made.cli("down", "-f", str(made.path), timeout=120)
        remove_test_containers(docker_client)


def answers(service: Service) -> str:
    response = httpx.get(f"http://127.0.0.1:{service.port}/", timeout=10)
    response.raise_for_status()
    return str(response.json().get("version"))


def test_a_file_comes_up_scales_alone_is_a_no_op_unchanged_and_goes_down_clean(
    project: Project,
) -> None:
    project.write()
    dry = project.up("--dry-run")
    assert "create 2 replicas" in dry.stdout and "dry run" in dry.stdout
    assert not project.web.containers() and not project.api.containers()

    first = project.up()
    assert "detached" in first.stdout + first.stderr
    assert answers(project.web) == "1" and answers(project.api) == "1"
    before = project.ids_and_restarts()
    assert len(before) == 3, before

    # The same file, found as ./reuseport.toml by `up` without IMAGE: nothing restarts.
    again = project.in_dir("up")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("unchanged") == 2, again.stdout
    assert project.ids_and_restarts() == before
    listed = json.loads(project.in_dir("ps", "--json").stdout)  # no name: the file's services
    assert {row["service"] for row in listed} == {project.web.name, project.api.name}

    project.write(web_replicas=3)  # only web's count: a scale, every replica kept
    scaled = project.up()
    assert f"{project.web.name}: scale (replicas: 2 -> 3)" in scaled.stdout, scaled.stdout
    after = project.ids_and_restarts()
    assert len(after) == 4 and all(after[key] == value for key, value in before.items())

    project.path.write_text(project.path.read_text().replace(str(project.api.port), "1"))
    refused = project.cli("up", "-f", str(project.path))
    assert refused.returncode == 6, refused.stderr
    assert "REFUSED" in refused.stdout and "port:" in refused.stdout
    assert project.ids_and_restarts() == after  # web applied (nothing to do), api untouched

    down = project.cli("down", "-f", str(project.path))
    assert down.returncode == 0, down.stderr
    assert not project.web.containers() and not project.api.containers()
    assert not project.web.containers(role="supervisor")
    assert not project.api.containers(role="supervisor")
    state = project.web.state_dir
    left = [p.name for p in state.iterdir()] if state.exists() else []
    assert not [n for n in left if n.startswith((project.web.name, project.api.name))], left


def test_an_edited_image_rolls_out_under_load_with_zero_failed_requests(
    project: Project, migrate_req: None
) -> None:
    project.write(web_replicas=3)
    project.up()
    api_before = {k: v for k, v in project.ids_and_restarts().items() if project.api.name in k}
    project.write(web_image="reuseport-demo:v2", web_replicas=3)
    with Load(project.web.port) as load:
        wait_for(lambda: load.requests > 50, timeout=10, what="load running")
        rolled = project.up()
        wait_for(lambda: load.last_versions[-5:] == ["2"] * 5, timeout=10, what="v2 answering")
    assert "rolling update (image: reuseport-demo:v1 -> reuseport-demo:v2)" in rolled.stdout
    assert load.failures == [], load.failures[:5]
    assert load.versions["1"] > 0 and load.versions["2"] > 0
    after = project.ids_and_restarts()
    assert {k: v for k, v in after.items() if project.api.name in k} == api_before
    assert {row["image"] for row in project.web.ps()} == {"reuseport-demo:v2"}


def test_a_settings_edit_restarts_nothing_and_logs_and_top_show_every_service(
    project: Project,
) -> None:
    project.write()
    project.up()
    before = project.ids_and_restarts()
    store = StateStore(project.web.state_dir)

    def balance() -> str | None:
        status = ServiceStatus.from_json(store.load_status(project.web.name))
        return status.balance if status else None

    assert wait_for(balance, timeout=30, what="a published status") != "hash"
    # Supervisor settings only: the stored spec changes, the supervisor follows, and not
    # one replica is restarted or replaced.
    project.write(web_more='balance = "hash"\nhang-window = 3\nbackoff-max = 10')
    applied = project.up()
    assert f"{project.web.name}: update settings" in applied.stdout, applied.stdout
    assert "balance: round-robin -> hash" in applied.stdout, applied.stdout
    assert f"{project.api.name}: unchanged" in applied.stdout, applied.stdout
    spec = store.load_spec(project.web.name)
    assert spec is not None and spec.balance == "hash" and spec.health.hang_window == 3
    wait_for(lambda: balance() == "hash", timeout=30, what="the supervisor on hash")
    assert project.ids_and_restarts() == before

    # No name: every service of the file, each line prefixed with its replica.
    logs = project.cli("logs", "--file", str(project.path), "--tail", "20")
    assert logs.returncode == 0, logs.stderr
    assert project.web.name in logs.stdout and project.api.name in logs.stdout, logs.stdout

    shown = top_output(project.web, "-f", str(project.path))
    assert project.web.name in shown and project.api.name in shown, shown[-2000:]
