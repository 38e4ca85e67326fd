"""Ownership by labels AND name, and what the Docker adapter writes into labels and mounts."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from reuseport import labels
from reuseport.engine.docker import SUPERVISOR_SOCKET_DIR, DockerEngine, supervisor_socket_mount
from reuseport.spec import ServiceSpec, redact_value

SPEC = ServiceSpec(name="web", image="app:1", replicas=2, env=(("DB_PASSWORD", "hunter2"),))


def replica(nonce: str = "a1b2c3", index: int = 1) -> dict[str, str]:
    return labels.replica_labels("web", index, "hash", "{}", 0, nonce)


def test_a_replica_is_owned_only_under_the_name_its_labels_imply() -> None:
    assert labels.is_owned(replica(), "/web.1.a1b2c3")  # Docker's leading "/"
    assert labels.is_owned(replica(), "web.1.a1b2c3")
    assert not labels.is_owned(replica(), "web.1.ffffff")  # another nonce
    assert not labels.is_owned(replica(), "web.2.a1b2c3")  # another index
    assert not labels.is_owned(replica(), "api.1.a1b2c3")  # another service


def test_a_container_run_from_a_committed_replica_is_not_owned() -> None:
    """`docker commit` copies the labels into the image; the new container gets its own
    name (Docker keeps names unique, so never the replica's)."""
    copied = replica()
    assert not labels.is_owned(copied, "/objective_turing")
    assert not labels.is_owned(copied, "/web.1.a1b2c3-copy")


def test_supervisors_are_owned_only_under_their_name() -> None:
    found = labels.supervisor_labels("web", "hash", "0f0f0f")
    assert labels.is_owned(found, "/" + labels.supervisor_name("web", "0f0f0f"))
    assert labels.is_owned(found, "/reuseport-supervisor.web.0f0f0f")
    assert not labels.is_owned(found, "/reuseport-supervisor.web.000000")
    assert not labels.is_owned(found, "/web.1.0f0f0f")  # a replica's name shape


def test_replicas_from_before_the_nonce_label_keep_their_ownership_by_name() -> None:
    legacy = {k: v for k, v in replica().items() if k != labels.NONCE}
    assert labels.is_owned(legacy, "/web.1.9a8b7c")
    assert not labels.is_owned(legacy, "/eager_hopper")
    assert not labels.is_owned(legacy, "/web.1.not-hex")


@pytest.mark.parametrize(
    "broken",
    [
        None,
        {},
        {**replica(), labels.MANAGED: "probe"},
        {k: v for k, v in replica().items() if k != labels.SERVICE},
        {**replica(), labels.ROLE: "other"},
        {**replica(), labels.NONCE: ""},
    ],
)
def test_not_owned_without_every_mark(broken: dict[str, str] | None) -> None:
    assert not labels.is_owned(broken, "/web.1.a1b2c3")
    assert not labels.is_owned(broken, "/web.1.")


def test_the_supervisor_mounts_the_socket_directory_not_the_file() -> None:
    mount, docker_host = supervisor_socket_mount("/var/run/../run/docker.sock")
    assert mount["Type"] == "bind" and mount["Source"] == "/run"
    assert mount["Target"] == SUPERVISOR_SOCKET_DIR
    assert mount["BindOptions"] == {"NonRecursive": True}
    assert docker_host == f"unix://{SUPERVISOR_SOCKET_DIR}/docker.sock"
    _, custom = supervisor_socket_mount("/srv/engine/d.sock")
    assert custom == f"unix://{SUPERVISOR_SOCKET_DIR}/d.sock"


class RecordingApi:
    """The few low-level calls create_replica and start_supervisor make."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create_host_config(self, **options: Any) -> dict[str, Any]:
        return options

    def create_container(self, image: str, **options: Any) -> dict[str, str]:
        self.created.append({"image": image, **options})
        return {"Id": "c" * 64}

    def start(self, container_id: str) -> None:
        pass


class RecordingClient:
    def __init__(self) -> None:
        self.api = RecordingApi()


def test_replica_labels_carry_the_redacted_spec_and_the_nonce_of_its_name() -> None:
    client = RecordingClient()
    DockerEngine(client).create_replica(SPEC, 1, restarts=0)  # type: ignore[arg-type]
    (created,) = client.api.created
    found = created["labels"]
    assert "hunter2" not in json.dumps(found)
    label_spec = ServiceSpec.from_json(found[labels.SPEC])
    assert label_spec == SPEC.redacted()
    assert dict(label_spec.env)["DB_PASSWORD"] == redact_value("hunter2")
    assert found[labels.SPEC_HASH] == SPEC.spec_hash()  # the real spec's hash
    assert created["environment"]["DB_PASSWORD"] == "hunter2"  # the app still gets it
    assert created["name"] == f"web.1.{found[labels.NONCE]}"
    assert labels.is_owned(found, created["name"])


def test_the_supervisor_container_reaches_the_engine_through_the_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/docker.sock")
    client = RecordingClient()
    DockerEngine(client).start_supervisor(SPEC, "reuseport:latest", "/state")  # type: ignore[arg-type]
    (created,) = client.api.created
    host_config = created["host_config"]
    assert host_config["binds"] == {"/state": {"bind": "/state", "mode": "rw"}}
    assert [m["Source"] for m in host_config["mounts"]] == ["/run"]
    assert created["environment"] == {"DOCKER_HOST": f"unix://{SUPERVISOR_SOCKET_DIR}/docker.sock"}
    assert created["command"] == ["supervise", "web", "--state-dir", "/state"]
    assert labels.is_owned(created["labels"], created["name"])


def test_replica_cpu_limit_becomes_the_containers_nano_cpus() -> None:
    client = RecordingClient()
    engine = DockerEngine(client)  # type: ignore[arg-type]
    engine.create_replica(replace(SPEC, cpus=0.25), 1, restarts=0)
    engine.create_replica(SPEC, 2, restarts=0)
    limited, unlimited = (c["host_config"].get("nano_cpus") for c in client.api.created)
    assert (limited, unlimited) == (250_000_000, None)
