"""A dockerd restart, with and without ``live-restore``, under a detached service.

With live-restore the replicas (and the supervisor container) keep running through the
restart: nothing may be restarted, and the supervisor must supervise again within seconds
(it mounts the socket's directory, so the re-created socket is reachable; a file mount
would be refused until its 30 s engine-lost exit). Without live-restore the restart stops
every container; the supervisor's restart policy brings it back and it restores N ready.

The ``dockerd`` fixture restarts the real engine: it restores /etc/docker/daemon.json as it
found it (or absent) and restarts dockerd with its original command line, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import psutil
import pytest

from reuseport import labels
from tests.integration.conftest import Service, remove_test_containers, wait_for

DAEMON_JSON = Path("/etc/docker/daemon.json")
DOCKERD_PIDFILE = Path("/var/run/docker.pid")
DOCKERD_LOG = Path("/var/log/reuseport-dockerd.log")
# A supervisor that lost the engine exits after 30 s (ENGINE_LOST_EXIT_S) and Docker starts
# a fresh one: a replacement within this bound proves the SAME supervisor reconnected.
SUPERVISES_AGAIN_S = 15.0

pytestmark = pytest.mark.timeout(420)


class Dockerd:
    """The running dockerd: restart it, optionally with live-restore changed."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client  # the session's client: its pooled connections must recover
        self.argv = psutil.Process(self.pid()).cmdline()
        self.original = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
        self.changed = False

    @staticmethod
    def pid() -> int:
        pids = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "dockerd"]
        assert len(pids) == 1, f"expected one dockerd, found {pids}"
        return pids[0]

    def restart(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=90)
        self.start()

    def start(self) -> None:
        # A dockerd that did not exit cleanly leaves its pid file: the next start refuses.
        if DOCKERD_PIDFILE.exists():
            try:
                stale = not psutil.pid_exists(int(DOCKERD_PIDFILE.read_text().strip()))
            except ValueError:
                stale = True
            if stale:
                DOCKERD_PIDFILE.unlink()
        with DOCKERD_LOG.open("ab") as log:
            subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # like scripts/ensure-docker's setsid: outlives pytest
            )
        wait_for(answers, timeout=60, interval=0.2, what="dockerd answering")
        wait_for(lambda: pings(self.client), timeout=10, what="the session client reconnected")

    def set_live_restore(self, enabled: bool) -> None:
        """Write live-restore into daemon.json (other settings kept) and restart dockerd if
        the running engine does not already have it."""
        if live_restore_enabled() == enabled:
            return
        config: dict[str, Any] = json.loads(self.original) if self.original else {}
        config["live-restore"] = enabled
        self.changed = True
        DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
        DAEMON_JSON.write_text(json.dumps(config, indent=2) + "\n")
        self.restart()
        assert live_restore_enabled() == enabled

    def restore(self) -> None:
        if not self.changed:
            if not answers():
                self.start()
            return
        if self.original is None:
            DAEMON_JSON.unlink(missing_ok=True)
        else:
            DAEMON_JSON.write_bytes(self.original)
        if any(p.info["name"] == "dockerd" for p in psutil.process_iter(["name"])):
            self.restart()
        else:
            self.start()


def answers() -> bool:
    try:
        client = docker.from_env(timeout=5)  # already talks to the engine (API version)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


def pings(client: docker.DockerClient) -> bool:
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False


def live_restore_enabled() -> bool:
    client = docker.from_env(timeout=30)
    try:
        return bool(client.info()["LiveRestoreEnabled"])
    finally:
        client.close()


@pytest.fixture
def dockerd(docker_client: docker.DockerClient) -> Iterator[Dockerd]:
    engine = Dockerd(docker_client)
    try:
        yield engine
    finally:
        engine.restore()
        remove_test_containers(docker.from_env())  # whatever the restart left of the test


def container_state(client: docker.DockerClient, container_id: str) -> tuple[str, int, int]:
    attrs = client.api.inspect_container(container_id)
    return attrs["State"]["Status"], attrs["State"]["Pid"], attrs["RestartCount"]


def snapshot(service: Service) -> dict[str, tuple[str, int, int]]:
    """Container id -> (status, pid, restart count) of every replica and supervisor."""
    ids = [c.id for c in service.containers(all=False)]
    ids += [c.id for c in service.containers(role=labels.ROLE_SUPERVISOR, all=False)]
    return {cid: container_state(service.client, cid) for cid in ids}


def ready_replicas(service: Service) -> dict[int, str]:
    """Index -> container id of the replicas `ps` shows ready, checked against the engine."""
    ready = {r["replica"] for r in service.ps() if r["ready"]}
    return {i: cid for i, cid in service.replica_ids().items() if i in ready}


def test_live_restore_keeps_replicas_and_the_supervisor_supervises_again(
    dockerd: Dockerd, service: Service
) -> None:
    dockerd.set_live_restore(True)  # in effect BEFORE the containers start
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    before = snapshot(service)
    replicas = service.replica_ids()
    assert len(before) == 3
    assert all(status == "running" and restarts == 0 for status, _, restarts in before.values())

    dockerd.restart()
    answered_at = time.monotonic()
    # Nothing was restarted: same containers, same processes, no restart counted.
    assert snapshot(service) == before
    assert service.replica_ids() == replicas

    # The supervisor supervises again: a replica killed from the host is replaced.
    _, victim_pid, _ = before[replicas[1]]
    os.kill(victim_pid, signal.SIGKILL)
    wait_for(
        lambda: (ready := ready_replicas(service)).keys() == {1, 2} and ready[1] != replicas[1],
        timeout=SUPERVISES_AGAIN_S + 30,
        what="replica 1 replaced and ready",
    )
    took = time.monotonic() - answered_at
    assert took < SUPERVISES_AGAIN_S, f"replaced {took:.1f}s after dockerd answered"
    assert service.replica_ids()[2] == replicas[2]
    # ...by the same supervisor process (not a fresh one after an engine-lost exit).
    (supervisor,) = service.containers(role=labels.ROLE_SUPERVISOR, all=False)
    assert container_state(service.client, supervisor.id) == before[supervisor.id]


def test_without_live_restore_the_supervisor_brings_the_service_back(
    dockerd: Dockerd, service: Service
) -> None:
    dockerd.set_live_restore(False)
    assert service.cli(*service.up_args("--detach", replicas=2)).returncode == 0
    before = snapshot(service)
    old_pids = {pid for _, pid, _ in before.values()}

    dockerd.restart()
    wait_for(
        lambda: ready_replicas(service).keys() == {1, 2}, timeout=60, interval=0.5, what="2 ready"
    )
    assert not any(psutil.pid_exists(pid) for pid in old_pids)  # the restart stopped them all
    # The stopped replicas were replaced and none is kept: the corpses are removed in the
    # background after the replacements start, so this can trail readiness by a pass.
    wait_for(lambda: len(service.containers()) == 2, timeout=30, what="the corpses removed")
    for container in service.containers(all=False):
        _, pid, _ = container_state(service.client, container.id)
        assert pid not in old_pids
    (supervisor,) = service.containers(role=labels.ROLE_SUPERVISOR, all=False)
    assert supervisor.id in before  # the same container, started again by its policy
