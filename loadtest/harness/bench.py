"""One benchmark run on the engine: a reuseport service and plain labelled containers of
the same image in the host network, and their removal.

Every container the bench starts itself carries ``io.reuseport.bench=1`` and
``io.reuseport.bench.run=<name>``; the reuseport service is called ``<name>``. The name
ends in ``-<pid>``, so a later run can tell (and remove) what a killed one left behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from loadtest.harness import fromfile
from loadtest.harness.cli import ReuseportCli
from loadtest.harness.errors import SetupError, TrialFailed
from reuseport import labels as rp_labels
from reuseport.kernel import sockets as kernel
from reuseport.projectfile import ServiceEntry
from reuseport.status import ServiceStatus
from reuseport.store import StateStore

BENCH_LABEL = "io.reuseport.bench"
RUN_LABEL = "io.reuseport.bench.run"
TOOL_IMAGE = "reuseport:latest"
SETUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BenchConfig:
    """What a bench runs. ``name`` must end in ``-<pid>`` (see the module doc)."""

    name: str
    state_dir: Path  # the reuseport CLI's (REUSEPORT_STATE_DIR)
    image: str = "reuseport-demo:latest"
    replicas: int = 4
    first_port: int = 18080  # free ports are looked for from here up
    backoff_reset: float | None = None  # `up --backoff-reset`; None: the tool's default
    gap_s: float = 0.0  # at least this long between a replica's (re)start and its next kill
    ready_timeout_s: float = SETUP_TIMEOUT_S  # `up --ready-timeout`
    # The user's service from a project file (harness/fromfile.py): `up -f` starts the
    # tool's setups from it, and the hand-started containers get its env.
    project: ServiceEntry | None = None


def log(message: str) -> None:
    """Progress on stderr, timestamped (stdout is for results)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_ports(start: int, count: int) -> list[int]:
    """``count`` ports from ``start`` up with no listener and bindable on 0.0.0.0 and ::."""
    found: list[int] = []
    for port in range(start, min(start + 2000, 65536)):
        if kernel.listening_inodes(port):
            continue
        if all(_bindable(family, port) for family in (socket.AF_INET, socket.AF_INET6)):
            found.append(port)
            if len(found) == count:
                return found
    raise SetupError(f"no {count} free TCP ports in {start}..{start + 2000}")


def free_block(start: int, count: int) -> int:
    """The first port of ``count`` consecutive free ports from ``start`` up."""
    for first in range(start, min(start + 2000, 65536 - count)):
        if all(
            not kernel.listening_inodes(port)
            and all(_bindable(family, port) for family in (socket.AF_INET, socket.AF_INET6))
            for port in range(first, first + count)
        ):
            return first
    raise SetupError(f"no {count} consecutive free TCP ports in {start}..{start + 2000}")


def _bindable(family: int, port: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except OSError as exc:
        # No IPv6 on this host is fine; anything else means the port is taken.
        return family == socket.AF_INET6 and exc.errno in (97, 99)  # EAFNOSUPPORT, EADDRNOTAVAIL
    return True


def wait_listening(port: int, want: int, timeout: float) -> None:
    """Until the kernel shows ``want`` listeners on ``port``; SetupError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while len(kernel.listening_inodes(port)) < want:
        if time.monotonic() > deadline:
            got = len(kernel.listening_inodes(port))
            raise SetupError(f"port {port}: only {got}/{want} listeners after {timeout:g}s")
        time.sleep(0.05)


class Bench:
    """Everything one run starts (see the module doc), and its removal."""

    def __init__(
        self,
        config: BenchConfig,
        client: docker.DockerClient,
        progress: Callable[[str], None] = log,
    ) -> None:
        self.config = config
        self.client = client
        self.log = progress
        self.name = config.name
        self.replicas = config.replicas
        self.cli = ReuseportCli(config.state_dir)
        self.store = StateStore(config.state_dir)
        self.rp_port = 0  # the reuseport service's port
        self.dk_port = 0  # the Docker-policy containers' port
        self.services_up: list[str] = []  # reuseport services `up` was run for, to `down`
        # perf_counter() when each target was last seen listening after a (re)start.
        self.rp_since: dict[int, float] = {}
        self.dk_since: dict[str, float] = {}
        self.dk_containers: list[Container] = []

    # -- setup ---------------------------------------------------------------------------

    def check_images(self) -> None:
        for image in (self.config.image, TOOL_IMAGE):
            try:
                self.client.images.get(image)  # never let containers.run() try a pull
            except docker.errors.ImageNotFound:
                raise SetupError(f"image {image} is missing: run scripts/build-images") from None

    def take_ports(self, extra: int = 0) -> list[int]:
        """Free ports for ``rp_port`` and ``dk_port`` and ``extra`` more (returned)."""
        self.rp_port, self.dk_port, *more = free_ports(self.config.first_port, 2 + extra)
        return more

    def start_container(
        self,
        port: int,
        replica: int,
        name: str | None = None,
        restart_always: bool = False,
        health_port: int | None = None,
        healthcheck: dict[str, Any] | None = None,
    ) -> Container:
        """One container of the image as the tool runs a replica (engine/docker.py): host
        network, docker-init, PORT and REPLICA; the app itself sets SO_REUSEPORT."""
        environment = dict(self.config.project.spec.env) if self.config.project else {}
        environment |= {"PORT": str(port), "REPLICA": str(replica)}
        if health_port is not None:
            environment["HEALTH_PORT"] = str(health_port)
        container: Container = self.client.containers.run(
            self.config.image,
            detach=True,
            name=name,
            network_mode="host",
            restart_policy={"Name": "always"} if restart_always else None,
            init=True,
            environment=environment,
            labels={BENCH_LABEL: "1", RUN_LABEL: self.name},
            healthcheck=healthcheck,
        )
        return container

    def start_docker_policy(
        self, health_ports: Sequence[int] = (), healthcheck: dict[str, Any] | None = None
    ) -> None:
        """``replicas`` plain ``--restart always --init`` containers on ``dk_port``; with
        ``health_ports``, container i also gets ``HEALTH_PORT=health_ports[i-1]`` and the
        Docker ``healthcheck`` (Engine API form)."""
        self.log(
            f"docker policy: starting {self.replicas} --restart always containers "
            f"on port {self.dk_port}"
        )
        for i in range(1, self.replicas + 1):
            container = self.start_container(
                self.dk_port,
                i,
                name=f"{self.name}-docker-{i}",
                restart_always=True,
                health_port=health_ports[i - 1] if health_ports else None,
                healthcheck=healthcheck,
            )
            self.dk_containers.append(container)
        wait_listening(self.dk_port, self.replicas, SETUP_TIMEOUT_S)
        now = time.perf_counter()
        self.dk_since = {c.id: now for c in self.dk_containers}

    def start_reuseport(
        self, port: int | None = None, extra: Sequence[str] = (), service: str | None = None
    ) -> float:
        """``reuseport up -d`` on ``port`` (default ``rp_port``; plus ``extra`` options of
        ``up``), proven listening by ps and the kernel; the seconds ``up`` took.
        ``service``: a further service of this bench (default: the bench's own ``name``);
        its name must end in ``-<pid>`` too, and ``cleanup`` takes it down as well."""
        port = port or self.rp_port
        service = service or self.name
        ready = self.config.ready_timeout_s
        flags = list(extra)
        if self.config.backoff_reset is not None:
            flags += ["--backoff-reset", str(self.config.backoff_reset)]
        if self.config.project is not None:
            up = ["up", "-f", str(self._setup_file(service, port, flags))]
        else:
            up = ["up", self.config.image, "-n", str(self.replicas), "-p", str(port)]
            up += ["--name", service, "-d", "--ready-timeout", f"{ready:g}", *flags]
        self.log(f"reuseport: {' '.join(up)}")
        # Before the call: a half-done `up` still needs `down`.
        if service not in self.services_up:
            self.services_up.append(service)
        t0 = time.perf_counter()
        self.cli.run(*up, timeout=ready + 60)
        seconds = time.perf_counter() - t0
        listening = [r for r in self.cli.ps(service) if r.get("listening")]
        in_kernel = len(kernel.listening_inodes(port))
        if len(listening) != self.replicas or in_kernel != self.replicas:
            raise SetupError(
                f"`up` returned but ps shows {len(listening)}/{self.replicas} listening, "
                f"the kernel {in_kernel}/{self.replicas}"
            )
        if service == self.name:
            now = time.perf_counter()
            self.rp_since = {int(r["replica"]): now for r in listening}
        return seconds

    def _setup_file(self, service: str, port: int, flags: Sequence[str]) -> Path:
        """The project file `up -f` starts ``service`` from (harness/fromfile.py), next
        to the state dir, in the bench's own work directory."""
        assert self.config.project is not None
        health_base = None
        if self.config.project.spec.health.port_base is not None:
            # Far from the setups' own ports, which were all picked before any started.
            health_base = free_block(port + 1000, self.replicas)
        return fromfile.setup_file(
            self.config.project,
            service,
            port,
            flags,
            self.config.ready_timeout_s,
            health_base,
            self.config.state_dir.parent,
        )

    def rollout(self, image: str, min_ready_s: float) -> tuple[bool, float]:
        """``reuseport rollout`` of the bench's service to ``image``: (it completed, the
        seconds it took)."""
        started = time.monotonic()
        result = self.cli.run(
            "rollout",
            self.name,
            "--image",
            image,
            "--min-ready",
            f"{min_ready_s:g}",
            timeout=300,
            check=False,
        )
        return result.returncode == 0, time.monotonic() - started

    def wait_steered(self, service: str, policy: str, timeout: float = SETUP_TIMEOUT_S) -> None:
        """Until the supervisor of ``service`` runs ``policy`` (``--balance``) with every
        replica in the steering map; SetupError (with its note) when it does not, so a row
        labelled steered never silently measures the kernel's hash."""
        deadline = time.monotonic() + timeout
        while True:
            status = ServiceStatus.from_json(self.store.load_status(service))
            members = sum(1 for r in status.replicas if r.member) if status else 0
            if status and status.balance == policy and members == self.replicas:
                return
            if time.monotonic() > deadline:
                balance = (status.balance or "?") if status else "no status"
                note = f" ({status.balance_note})" if status and status.balance_note else ""
                raise SetupError(
                    f"{service}: balance {balance}{note}, {members}/{self.replicas} replicas "
                    f"steered after {timeout:g} s; wanted {policy}"
                )
            time.sleep(0.1)

    def cleanup_stale(self) -> None:
        """Remove what an earlier, killed run of a benchmark left (its pid is gone): its
        labelled containers, and reuseport services named like this bench's."""
        owners: set[str] = set()
        for c in self.client.containers.list(
            ignore_removed=True, all=True, filters={"label": BENCH_LABEL}
        ):
            owner = c.labels.get(RUN_LABEL, "")
            if _owner_gone(owner):
                self.log(f"removing stale {c.name} from an earlier run")
                with contextlib.suppress(docker.errors.APIError):
                    c.remove(force=True)
                owners.add(owner)
        prefix = self.name.rsplit("-", 1)[0] + "-"
        found = self.client.api.containers(all=True, filters={"label": rp_labels.filters()})
        for c in found:
            service = c["Labels"].get(rp_labels.SERVICE, "")
            if service.startswith(prefix) and _owner_gone(service):
                owners.add(service)
        for owner in sorted(owners):
            self.log(f"reuseport down {owner} (left by an earlier run)")
            self.cli.down_quietly(owner)

    # -- targets ---------------------------------------------------------------------------

    def rp_containers(self) -> dict[str, int]:
        """Running replica container id -> replica index."""
        found = self.client.api.containers(
            filters={"label": rp_labels.filters(self.name, rp_labels.ROLE_REPLICA)}
        )
        return {c["Id"]: int(c["Labels"].get(rp_labels.REPLICA, "0")) for c in found}

    def rp_container(self, index: int) -> str:
        """The running container id of replica ``index``."""
        cid = next((c for c, i in self.rp_containers().items() if i == index), None)
        if cid is None:
            raise TrialFailed(f"replica {index} has no running container")
        return cid

    def listener_of(self, port: int, container_id: str) -> kernel.Listener:
        for listener in kernel.listeners(port):
            if listener.container_id == container_id:
                if len(listener.pids) != 1:
                    raise TrialFailed(f"listener {listener.inode} is held by {listener.pids}")
                return listener
        raise TrialFailed(f"no listener of container {container_id[:12]} on port {port}")

    def slot_failures(self, index: int) -> int | None:
        """The supervisor's consecutive-failure count of replica ``index`` (status file)."""
        status = ServiceStatus.from_json(self.store.load_status(self.name))
        slot = status.indices.get(index) if status is not None else None
        return slot.failures if slot is not None else None

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove everything this run created; return what is still left (should be empty)."""
        for service in self.services_up:
            self.log(f"reuseport down {service}")
            self.cli.down_quietly(service)
        services, self.services_up = [self.name, *self.services_up], []
        for c in self.client.containers.list(
            ignore_removed=True, all=True, filters={"label": f"{RUN_LABEL}={self.name}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
        self.dk_containers = []
        left: list[str] = []
        for filters in (
            {"label": f"{RUN_LABEL}={self.name}"},
            *({"label": f"{rp_labels.SERVICE}={name}"} for name in dict.fromkeys(services)),
        ):
            left += [
                f"container {c.name}"
                for c in self.client.containers.list(ignore_removed=True, all=True, filters=filters)
            ]
        for name in dict.fromkeys(services):
            left += [f"file {p}" for p in sorted(self.store.root.glob(f"{name}.*"))]
        return left


def _owner_gone(name: str) -> bool:
    pid = name.rsplit("-", 1)[-1]
    return pid.isdigit() and not pid_alive(int(pid))
