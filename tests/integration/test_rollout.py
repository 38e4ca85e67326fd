"""Zero-downtime rollout, rollback, undo and scale-down under load."""

from __future__ import annotations

import io
import json
import signal
import threading
from pathlib import Path

from reuseport import host, labels
from tests.integration.conftest import Service, assert_one_line_error, terminate, wait_for
from tests.integration.load import Load


class CountSampler:
    """Samples how many replica containers run, throughout a block."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.counts: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            # Low-level list: no per-container inspect that could race a removal.
            running = self.service.client.api.containers(
                filters={"label": labels.filters(self.service.name, labels.ROLE_REPLICA)}
            )
            self.counts.append(len(running))
            self._stop.wait(0.05)

    def __enter__(self) -> CountSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def up_v1(service: Service, replicas: int = 4) -> None:
    result = service.cli(*service.up_args("--detach", replicas=replicas, image="reuseport-demo:v1"))
    assert result.returncode == 0, result.stderr


def test_rollout_under_load_has_zero_failed_requests(service: Service, migrate_req: None) -> None:
    up_v1(service)
    with Load(service.port) as load, CountSampler(service) as sampler:
        wait_for(lambda: load.requests > 50, timeout=10, what="load running")
        result = service.cli(
            "rollout", service.name, "--image", "reuseport-demo:v2", "--min-ready", "0.5"
        )
        wait_for(lambda: load.last_versions[-5:] == ["2"] * 5, timeout=10, what="v2 answering")
    assert result.returncode == 0, result.stderr
    assert load.failures == [], load.failures[:5]
    assert load.versions["1"] > 0 and load.versions["2"] > 0
    assert min(sampler.counts) >= 4 and max(sampler.counts) <= 5  # N - U .. N + K
    assert {row["image"] for row in service.ps()} == {"reuseport-demo:v2"}

    history = json.loads(service.cli("history", service.name, "--json").stdout)
    assert [(r["revision"], r["image"], r["result"]) for r in history] == [
        (1, "reuseport-demo:v1", "superseded"),
        (2, "reuseport-demo:v2", "complete"),
    ]

    with Load(service.port) as load:
        wait_for(lambda: load.requests > 50, timeout=10, what="load running")
        undo = service.cli("rollout", service.name, "--undo")
        wait_for(lambda: load.last_versions[-5:] == ["1"] * 5, timeout=10, what="v1 answering")
    assert undo.returncode == 0, undo.stderr
    assert load.failures == [], load.failures[:5]
    history = json.loads(service.cli("history", service.name, "--json").stdout)
    assert [r["result"] for r in history] == ["superseded", "superseded", "complete"]


def test_rollout_to_a_failing_template_rolls_back_untouched(
    service: Service, migrate_req: None
) -> None:
    up_v1(service, replicas=3)
    before = service.replica_ids()
    with Load(service.port) as load:
        wait_for(lambda: load.requests > 50, timeout=10, what="load running")
        # Without SO_REUSEPORT the new replica exits at once: the port is held by siblings.
        result = service.cli("rollout", service.name, "-e", "REUSEPORT=0", "--timeout", "60")
    assert_one_line_error(result, "failed: new replica", "exited with code 1", "rolled back to")
    assert result.returncode == 8
    assert load.failures == [], load.failures[:5]
    wait_for(lambda: len(service.containers()) == 3, timeout=30, what="failed replicas removed")
    assert service.replica_ids() == before  # the old replicas were never touched
    history = json.loads(service.cli("history", service.name, "--json").stdout)
    assert history[-1]["result"].startswith("rolled back: new replica")


def test_rollout_refuses_an_image_running_under_another_uid(
    service: Service, tmp_path: Path
) -> None:
    up_v1(service, replicas=2)
    tag = f"reuseport-demo:{service.name}-nobody"
    service.client.images.build(
        # rm/forcerm: the SDK otherwise leaves the build's intermediate containers behind
        fileobj=io.BytesIO(b"FROM reuseport-demo:v1\nUSER 65534\n"),
        tag=tag,
        rm=True,
        forcerm=True,
    )
    try:
        before = service.replica_ids()
        result = service.cli("rollout", service.name, "--image", tag)
        assert_one_line_error(result, "would run as uid 65534", "listen as uid 0")
        assert service.replica_ids() == before
    finally:
        service.client.images.remove(tag, force=True)


def test_rollout_input_errors_are_one_line(service: Service) -> None:
    up_v1(service, replicas=1)
    assert_one_line_error(service.cli("rollout", service.name), "needs --image")
    assert_one_line_error(service.cli("rollout", service.name, "--undo"), "no earlier revision")
    assert_one_line_error(
        service.cli("rollout", service.name, "--image", "reuseport-demo:v1"), "already runs"
    )
    assert_one_line_error(
        service.cli("rollout", service.name, "--image", "nosuch:1"), "not present locally"
    )
    assert_one_line_error(
        service.cli("rollout", service.name, "--image", "reuseport-demo:v2", "--max-surge", "0"),
        "cannot both be 0",
    )
    assert_one_line_error(service.cli("rollout", "it-nosuch", "--image", "x:1"), "no service named")


def test_scale_down_under_load_has_zero_failed_requests(
    service: Service, migrate_req: None
) -> None:
    up_v1(service, replicas=6)
    with Load(service.port) as load:
        wait_for(lambda: load.requests > 50, timeout=10, what="load running")
        result = service.cli("scale", service.name, "2")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: len(service.containers()) == 2, timeout=30, what="4 replicas drained")
        requests_at_two = load.requests
        wait_for(lambda: load.requests > requests_at_two + 50, timeout=10, what="load on 2")
    assert load.failures == [], load.failures[:5]


def test_interrupted_rollout_is_finished_by_the_supervisor(service: Service) -> None:
    up_v1(service, replicas=3)
    process = service.popen(
        "rollout", service.name, "--image", "reuseport-demo:v2", "--min-ready", "2"
    )
    try:
        # Interrupt once the first new replica runs beside the old ones.
        wait_for(
            lambda: "reuseport-demo:v2" in {r["image"] for r in service.ps()},
            timeout=30,
            what="first new replica",
        )
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "the supervisor goes on rolling" in err and "--undo" in err
    # A consistent service: the supervisor completes the rollout, never below N - U ready.
    ready_counts: list[int] = []

    def converged() -> bool:
        rows = service.ps()
        ready_counts.append(sum(1 for r in rows if r["listening"]))
        return (
            {r["image"] for r in rows} == {"reuseport-demo:v2"}
            and len(rows) == 3
            and all(r["listening"] for r in rows)
        )

    wait_for(converged, timeout=60, what="rollout completed by the supervisor")
    assert min(ready_counts) >= 3


def test_rollout_of_a_foreground_service_and_the_migrate_flag(service: Service) -> None:
    before = host.tcp_migrate_req()
    process = service.popen(*service.up_args(replicas=2, image="reuseport-demo:v1"))
    try:
        wait_for(lambda: len(service.listening()) == 2, timeout=60, what="2 listening")
        host.TCP_MIGRATE_REQ.write_text("0\n")
        result = service.cli(
            "rollout", service.name, "--image", "reuseport-demo:v2", "--tcp-migrate-req"
        )
        assert result.returncode == 0, result.stderr
        assert "set net.ipv4.tcp_migrate_req=1 (was 0)" in result.stderr
        assert host.tcp_migrate_req() == 1
        assert {r["image"] for r in service.ps()} == {"reuseport-demo:v2"}
        host.TCP_MIGRATE_REQ.write_text("0\n")
        warned = service.cli("rollout", service.name, "--undo")
        assert warned.returncode == 0, warned.stderr
        assert warned.stderr.count("sysctl -w net.ipv4.tcp_migrate_req=1") == 1  # warned once
    finally:
        host.TCP_MIGRATE_REQ.write_text(f"{before}\n")
        out, err = terminate(process)
    assert "stopped and removed 2 replicas" in err
