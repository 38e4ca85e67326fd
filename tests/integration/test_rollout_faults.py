"""Rollouts meeting other changes and faults: a scale meanwhile, the detached supervisor
SIGKILLed midway, a foreground supervisor SIGKILLed midway (then adopted by `up`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest

from reuseport import labels
from reuseport.store import StateStore
from tests.integration.conftest import Service, wait_for

V1, V2 = "reuseport-demo:v1", "reuseport-demo:v2"

pytestmark = pytest.mark.timeout(300)


def rollout_to_v2(service: Service, min_ready: str = "1.5") -> subprocess.Popen[str]:
    return service.popen("rollout", service.name, "--image", V2, "--min-ready", min_ready)


def midway(service: Service) -> list[dict[str, Any]]:
    """Wait until replicas of both images run and a new one is ready: the rollout is
    under way, not done."""
    rows: list[dict[str, Any]] = []

    def mixed() -> bool:
        rows[:] = service.ps()
        images = {r["image"] for r in rows}
        return images == {V1, V2} and any(r["image"] == V2 and r["ready"] for r in rows)

    wait_for(mixed, timeout=60, interval=0.1, what="a half-done rollout")
    return rows


def all_ready_on(service: Service, image: str, replicas: int) -> bool:
    rows = service.ps()
    return len(rows) == replicas and all(r["ready"] and r["image"] == image for r in rows)


def running_by_image(service: Service) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for container in service.containers(all=False):
        found.setdefault(container.attrs["Config"]["Image"], set()).add(container.id)
    return found


def up_v1(service: Service, replicas: int, *extra: str) -> None:
    result = service.cli(*service.up_args(*extra, replicas=replicas, image=V1))
    assert result.returncode == 0, result.stderr


def test_scale_during_a_rollout_keeps_both_changes(service: Service) -> None:
    up_v1(service, 2, "--detach")
    rolling = rollout_to_v2(service)
    try:
        midway(service)
        scaled = service.cli("scale", service.name, "4")
        assert scaled.returncode == 0, scaled.stderr
        _, err = rolling.communicate(timeout=120)
    finally:
        if rolling.poll() is None:
            rolling.kill()
            rolling.communicate()
    assert rolling.returncode == 0, err
    wait_for(lambda: all_ready_on(service, V2, 4), timeout=60, what="4 ready on v2")
    stored = StateStore(service.state_dir).load_spec(service.name)
    assert stored is not None and (stored.replicas, stored.image) == (4, V2)


def test_detached_supervisor_killed_mid_rollout_finishes_it(service: Service) -> None:
    up_v1(service, 4, "--detach")
    (supervisor,) = service.containers(role=labels.ROLE_SUPERVISOR, all=False)
    rolling = rollout_to_v2(service)
    try:
        midway(service)
        supervisor.reload()
        # SIGKILL from the host, not `docker kill` (a manual stop Docker does not restart).
        os.kill(supervisor.attrs["State"]["Pid"], signal.SIGKILL)
        _, err = rolling.communicate(timeout=150)
    finally:
        if rolling.poll() is None:
            rolling.kill()
            rolling.communicate()
    assert rolling.returncode == 0, err
    supervisor.reload()
    assert supervisor.attrs["RestartCount"] >= 1  # it really died and Docker restarted it
    assert supervisor.status == "running"
    wait_for(lambda: all_ready_on(service, V2, 4), timeout=60, what="4 ready on v2")


@pytest.mark.parametrize("image", [V2, V1], ids=["adopt-new", "adopt-old"])
def test_up_adopts_a_rollout_its_foreground_supervisor_left_half_done(
    service: Service, image: str
) -> None:
    foreground = service.popen(*service.up_args(replicas=4, image=V1))
    rolling: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: len(service.listening()) == 4, timeout=60, what="4 listening")
        rolling = rollout_to_v2(service, min_ready="2")
        midway(service)
        foreground.send_signal(signal.SIGKILL)  # no chance to clean up: the replicas stay
        foreground.communicate(timeout=30)
        rolling.send_signal(signal.SIGINT)  # stop watching: nobody supervises any more
        rolling.communicate(timeout=30)
    finally:
        for process in (foreground, rolling):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    time.sleep(1)  # a replica the killed supervisor was draining finishes exiting
    hashes = {c.labels[labels.SPEC_HASH] for c in service.containers(all=False)}
    assert len(hashes) == 2, "the replicas should carry both templates"
    kept = running_by_image(service)[image]

    result = service.cli(*service.up_args("--detach", replicas=4, image=image))
    assert result.returncode == 0, result.stderr
    assert "two templates" in result.stderr and "adopted" in result.stderr
    wait_for(lambda: all_ready_on(service, image, 4), timeout=60, what=f"4 ready on {image}")
    assert kept <= running_by_image(service)[image]  # its template's replicas were kept
    stored = StateStore(service.state_dir).load_spec(service.name)
    assert stored is not None and stored.image == image
