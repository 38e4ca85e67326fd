#!/usr/bin/env python3
"""Replacement latency: reuseport's supervisor vs Docker's own restart policy.

Question: from a replica's death to its replacement listening, does reuseport take no
longer than Docker's restart policy takes to restart a crashed container?

Both setups run side by side in one run, with the same topology: 4 containers of
``reuseport-demo:latest`` in the host network namespace sharing ONE port with SO_REUSEPORT.

* reuseport: ``reuseport up IMAGE -n 4 -p PORT --name bench-replace-<pid> -d`` (detached
  supervisor container, no Docker restart policy on the replicas);
* Docker policy: 4 plain ``--restart always --init`` containers on a second port.

A trial takes the set of LISTEN inodes on the port, SIGKILLs one replica's listening host
process (``os.kill``; t0 = ``perf_counter()`` right before), then polls the kernel
(sock_diag, ``reuseport.kernel.sockets.listening_inodes``) every 2 ms until an inode that was not
there before listens AND the port has 4 listeners again (t1). Latency = t1 - t0.

Trials alternate between the two setups so both see the same machine load. Each setup
rotates over its 4 containers, and a container is only killed again once its backoff has
been reset, so every trial measures the "lone crash after a stable period" case of both:

* reuseport: the replica index's consecutive-failure count must be back to 0 (read from the
  supervisor's status file) -- the supervisor forgives it after ``--backoff-reset`` seconds
  (tool default 10 s) of listening;
* Docker: the container must have run >= 10.5 s, else Docker doubles its restart delay
  (100 ms, 200 ms, ...; moby restartmanager).

Extra trials kill reuseport replicas with ``docker kill`` and ``docker rm -f``; Docker's
restart policy never restarts after those (a manual stop), which the script verifies once
at the end.

Usage: ``.venv/bin/python benchmarks/replace_latency.py [--trials 15] [--json]``.
Exit status: 0 ok, 1 a trial never recovered or something was left behind, 2 setup failed,
130 interrupted. Everything it creates is removed in ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

import reuseport
from reuseport import labels as rp_labels
from reuseport.kernel import sockets as kernel
from reuseport.store import StateStore

BENCH_LABEL = "io.reuseport.bench"
RUN_LABEL = "io.reuseport.bench.run"
POLL_S = 0.002
DOCKER_STABLE_S = 10.5  # Docker resets its restart delay to 100 ms after a 10 s run
RECOVER_TIMEOUT_S = 30.0
SETUP_TIMEOUT_S = 60.0

SIGKILL = "SIGKILL from host"
DOCKER_KILL = "docker kill"
DOCKER_RM = "docker rm -f"


class SetupError(Exception):
    """The benchmark could not be set up (exit status 2)."""


class TrialFailed(Exception):
    """A killed replica was not replaced in time (exit status 1)."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measurements


@dataclass
class Trial:
    setup: str  # "reuseport" | "docker-policy"
    method: str  # SIGKILL | DOCKER_KILL | DOCKER_RM
    target: str  # replica index or container name
    latency_ms: float
    kill_to_start_ms: float | None = None  # kill -> Docker's State.StartedAt of the new process
    exit_to_start_ms: float | None = None  # Docker policy only: FinishedAt -> StartedAt


@dataclass
class Scenario:
    setup: str
    method: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def samples(self) -> list[float]:
        return [t.latency_ms for t in self.trials]

    def summary(self) -> dict[str, Any]:
        samples = self.samples
        return {
            "setup": self.setup,
            "method": self.method,
            "trials": len(samples),
            "median_ms": _round(statistics.median(samples)) if samples else None,
            "p90_ms": _round(p90(samples)) if samples else None,
            "max_ms": _round(max(samples)) if samples else None,
            "min_ms": _round(min(samples)) if samples else None,
            "kill_to_start_median_ms": _median_or_none(t.kill_to_start_ms for t in self.trials),
            "exit_to_start_median_ms": _median_or_none(t.exit_to_start_ms for t in self.trials),
            "samples_ms": [_round(s) for s in samples],
        }


def _round(value: float) -> float:
    return round(value, 1)


def _median_or_none(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return _round(statistics.median(present)) if present else None


def p90(samples: list[float]) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=10, method="inclusive")[8]


def wait_replaced(port: int, before: set[int], want: int, t0: float) -> float:
    """Poll the kernel until a new inode listens and ``want`` listeners exist; seconds."""
    deadline = t0 + RECOVER_TIMEOUT_S
    while True:
        now = kernel.listening_inodes(port)
        t = time.perf_counter()
        if len(now) == want and not now.keys() <= before:
            return t - t0
        if t > deadline:
            raise TrialFailed(
                f"port {port}: no replacement within {RECOVER_TIMEOUT_S:g}s "
                f"({len(now)}/{want} listening)"
            )
        time.sleep(POLL_S)


def wait_listening(port: int, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(kernel.listening_inodes(port)) < want:
        if time.monotonic() > deadline:
            got = len(kernel.listening_inodes(port))
            raise SetupError(f"port {port}: only {got}/{want} listeners after {timeout:g}s")
        time.sleep(0.05)


def docker_time(text: str | None) -> float | None:
    """Epoch seconds of a Docker RFC 3339 timestamp (nanoseconds kept to float precision)."""
    if not text or text.startswith("0001-"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    base = datetime.strptime(main[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{frac}") if frac else 0.0)


# --------------------------------------------------------------------------- environment


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


def _bindable(family: int, port: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except OSError as exc:
        # No IPv6 on this host is fine; anything else means the port is taken.
        return family == socket.AF_INET6 and exc.errno in (97, 99)  # EAFNOSUPPORT, EADDRNOTAVAIL
    return True


def versions(client: docker.DockerClient) -> dict[str, str]:
    info = client.version()
    return {
        "kernel": platform.release(),
        "docker_engine": str(info.get("Version", "?")),
        "docker_api": str(info.get("ApiVersion", "?")),
        "docker_py": docker.__version__,
        "python": platform.python_version(),
        "reuseport": reuseport.__version__,
        "cpus": str(os.cpu_count()),
    }


def cli(*args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the reuseport CLI (``python -m reuseport``) in its own session, so a Ctrl-C at
    the terminal does not interrupt the cleanup commands."""
    proc = subprocess.run(
        [sys.executable, "-m", "reuseport", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    if check and proc.returncode != 0:
        raise SetupError(
            f"`reuseport {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(
        self, args: argparse.Namespace, client: docker.DockerClient, name: str | None = None
    ) -> None:
        self.args = args
        self.client = client
        # The name must end in "-<pid>": cleanup_stale() reads the owner's pid from it.
        self.name = name or f"bench-replace-{os.getpid()}"
        self.replicas: int = args.replicas
        self.store = StateStore(None)
        self.rp_port = 0
        self.dk_port = 0
        self.up_attempted = False
        # perf_counter() when each target was last seen listening after a (re)start.
        self.rp_since: dict[int, float] = {}
        self.dk_since: dict[str, float] = {}
        self.dk_containers: list[Container] = []
        self.rp_scenarios = {m: Scenario("reuseport", m) for m in (SIGKILL, DOCKER_KILL, DOCKER_RM)}
        self.dk_scenario = Scenario("docker-policy", SIGKILL)
        self.policy_after_docker_kill = "not checked"
        self.restarts_seen: int | None = None
        self.stable_rule = ""

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        self.check_images()
        self.cleanup_stale()
        if self.args.port:
            self.rp_port, self.dk_port = free_ports(self.args.port, 2)
        else:
            self.rp_port, self.dk_port = free_ports(18080, 2)
        self.start_docker_policy()
        self.start_reuseport()

    def check_images(self) -> None:
        for image in (self.args.image, "reuseport:latest"):
            try:
                self.client.images.get(image)  # never let containers.run() try a pull
            except docker.errors.ImageNotFound:
                raise SetupError(f"image {image} is missing: run scripts/build-images") from None

    def start_docker_policy(
        self, health_ports: Sequence[int] = (), healthcheck: dict[str, Any] | None = None
    ) -> None:
        """``replicas`` plain ``--restart always --init`` containers on ``dk_port``; with
        ``health_ports``, container i also gets ``HEALTH_PORT=health_ports[i-1]`` and the
        Docker ``healthcheck`` (Engine API form)."""
        log(
            f"docker policy: starting {self.replicas} --restart always containers "
            f"on port {self.dk_port}"
        )
        for i in range(1, self.replicas + 1):
            environment = {"PORT": str(self.dk_port), "REPLICA": str(i)}
            if health_ports:
                environment["HEALTH_PORT"] = str(health_ports[i - 1])
            container = self.client.containers.run(
                self.args.image,
                detach=True,
                name=f"{self.name}-docker-{i}",
                network_mode="host",
                restart_policy={"Name": "always"},
                init=True,
                environment=environment,
                labels={BENCH_LABEL: "1", RUN_LABEL: self.name},
                healthcheck=healthcheck,
            )
            self.dk_containers.append(container)
        wait_listening(self.dk_port, self.replicas, SETUP_TIMEOUT_S)
        now = time.perf_counter()
        self.dk_since = {c.id: now for c in self.dk_containers}

    def start_reuseport(self, extra: Sequence[str] = ()) -> None:
        """``reuseport up -d`` on ``rp_port`` (plus ``extra`` options of ``up``); proven
        listening by ps and the kernel."""
        up = ["up", self.args.image, "-n", str(self.replicas), "-p", str(self.rp_port)]
        up += ["--name", self.name, "-d", "--ready-timeout", str(SETUP_TIMEOUT_S), *extra]
        if self.args.backoff_reset is not None:
            up += ["--backoff-reset", str(self.args.backoff_reset)]
        log(f"reuseport: {' '.join(up)}")
        self.up_attempted = True
        cli(*up, timeout=SETUP_TIMEOUT_S + 60)
        rows = json.loads(cli("ps", self.name, "--json", timeout=60).stdout)
        listening = [r for r in rows if r.get("listening")]
        if len(listening) != self.replicas:
            raise SetupError(f"ps shows {len(listening)}/{self.replicas} replicas listening")
        if len(kernel.listening_inodes(self.rp_port)) != self.replicas:
            raise SetupError(f"the kernel does not show {self.replicas} listeners on the port")
        now = time.perf_counter()
        self.rp_since = {int(r["replica"]): now for r in listening}
        reset = self.args.backoff_reset
        self.stable_rule = (
            f"reuseport --backoff-reset {reset:g}"
            if reset is not None
            else "reuseport default "
            "backoff (first failure replaced at once; forgiven after 10 s listening)"
        )

    def cleanup_stale(self) -> None:
        """Remove what an earlier, killed run of this benchmark left (its pid is gone)."""
        for c in self.client.containers.list(all=True, filters={"label": BENCH_LABEL}):
            owner = c.labels.get(RUN_LABEL, "")
            pid = owner.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                log(f"removing stale {c.name} from an earlier run")
                with contextlib.suppress(docker.errors.APIError):
                    c.remove(force=True)
                self._down_quietly(owner)

    def _down_quietly(self, name: str) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            cli("down", name, timeout=90, check=False)

    # -- targets ---------------------------------------------------------------------------

    def rp_containers(self) -> dict[str, int]:
        """Running replica container id -> replica index."""
        found = self.client.api.containers(
            filters={"label": rp_labels.filters(self.name, rp_labels.ROLE_REPLICA)}
        )
        return {c["Id"]: int(c["Labels"].get(rp_labels.REPLICA, "0")) for c in found}

    def listener_of(self, port: int, container_id: str) -> kernel.Listener:
        for listener in kernel.listeners(port):
            if listener.container_id == container_id:
                if len(listener.pids) != 1:
                    raise TrialFailed(f"listener {listener.inode} is held by {listener.pids}")
                return listener
        raise TrialFailed(f"no listener of container {container_id[:12]} on port {port}")

    def slot_failures(self, index: int) -> int | None:
        slot = self.store.load_status(self.name).get("slots", {}).get(str(index))
        if not isinstance(slot, dict) or not isinstance(slot.get("failures"), int):
            return None
        return slot["failures"]

    def wait_rp_stable(self, index: int) -> None:
        """Until the supervisor has forgiven ``index`` (its next death is replaced at once)."""
        reset = self.args.backoff_reset if self.args.backoff_reset is not None else 10.0
        fallback = self.rp_since[index] + reset + 1.5
        deadline = self.rp_since[index] + reset + 15
        while True:
            now = time.perf_counter()
            failures = self.slot_failures(index)
            if now - self.rp_since[index] >= self.args.gap and (
                failures == 0 or (failures is None and now >= fallback)
            ):
                return
            if now > deadline:
                raise TrialFailed(f"replica {index} still has {failures} failures on record")
            time.sleep(0.05)

    def wait_dk_stable(self, container_id: str) -> None:
        delay = self.dk_since[container_id] + DOCKER_STABLE_S - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    # -- trials ------------------------------------------------------------------------------

    def rp_trial(self, index: int, method: str) -> Trial:
        self.wait_rp_stable(index)
        by_id = self.rp_containers()
        cid = next((c for c, i in by_id.items() if i == index), None)
        if cid is None:
            raise TrialFailed(f"replica {index} has no running container")
        listener = self.listener_of(self.rp_port, cid)
        container = self.client.containers.get(cid) if method != SIGKILL else None
        before = set(kernel.listening_inodes(self.rp_port))
        wall0 = time.time()
        t0 = time.perf_counter()
        if method == SIGKILL:
            os.kill(listener.pids[0], signal.SIGKILL)
        elif method == DOCKER_KILL:
            assert container is not None
            container.kill()
        else:
            assert container is not None
            container.remove(force=True)
        seconds = wait_replaced(self.rp_port, before, self.replicas, t0)
        self.rp_since[index] = time.perf_counter()
        trial = Trial("reuseport", method, f"replica {index}", seconds * 1000)
        new = [x for x in kernel.listeners(self.rp_port) if x.inode not in before]
        if new and new[0].container_id:
            with contextlib.suppress(docker.errors.APIError):
                attrs = self.client.api.inspect_container(new[0].container_id)
                started = docker_time(attrs["State"].get("StartedAt"))
                if started is not None:
                    trial.kill_to_start_ms = (started - wall0) * 1000
        return trial

    def dk_trial(self, container: Container) -> Trial:
        self.wait_dk_stable(container.id)
        listener = self.listener_of(self.dk_port, container.id)
        before = set(kernel.listening_inodes(self.dk_port))
        wall0 = time.time()
        t0 = time.perf_counter()
        os.kill(listener.pids[0], signal.SIGKILL)
        seconds = wait_replaced(self.dk_port, before, self.replicas, t0)
        self.dk_since[container.id] = time.perf_counter()
        trial = Trial("docker-policy", SIGKILL, container.name or container.id[:12], seconds * 1000)
        with contextlib.suppress(docker.errors.APIError):
            state = self.client.api.inspect_container(container.id)["State"]
            started = docker_time(state.get("StartedAt"))
            finished = docker_time(state.get("FinishedAt"))
            if started is not None:
                trial.kill_to_start_ms = (started - wall0) * 1000
                if finished is not None:
                    trial.exit_to_start_ms = (started - finished) * 1000
        return trial

    def record(self, trial: Trial, scenario: Scenario) -> None:
        scenario.trials.append(trial)
        extra = ""
        if trial.kill_to_start_ms is not None:
            extra = f" (kill->started {trial.kill_to_start_ms:.0f} ms)"
        log(
            f"{trial.setup:13} {trial.method:17} {trial.target:28} "
            f"{trial.latency_ms:7.1f} ms{extra}"
        )

    def run(self) -> None:
        n = self.replicas
        next_index = 0
        last_trial = 0.0

        def pace() -> None:
            delay = last_trial + self.args.gap - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

        for k in range(self.args.trials):
            pace()
            index = next_index % n + 1
            next_index += 1
            self.record(self.rp_trial(index, SIGKILL), self.rp_scenarios[SIGKILL])
            last_trial = time.perf_counter()
            pace()
            self.record(self.dk_trial(self.dk_containers[k % n]), self.dk_scenario)
            last_trial = time.perf_counter()
        methods = [DOCKER_KILL, DOCKER_RM] * self.args.extra_trials
        for method in methods:
            pace()
            index = next_index % n + 1
            next_index += 1
            self.record(self.rp_trial(index, method), self.rp_scenarios[method])
            last_trial = time.perf_counter()
        rows = json.loads(cli("ps", self.name, "--json", timeout=60).stdout)
        self.restarts_seen = sum(int(r.get("restarts") or 0) for r in rows)

    def check_policy_after_docker_kill(self) -> None:
        """Docker's restart policy treats `docker kill` as a manual stop: verify it once."""
        if not self.dk_containers:
            return
        container = self.dk_containers[0]
        container.kill()
        time.sleep(2.0)
        container.reload()
        listening = len(kernel.listening_inodes(self.dk_port))
        if container.status != "running" and listening == self.replicas - 1:
            self.policy_after_docker_kill = (
                f"verified: after `docker kill` the --restart always container stayed "
                f"{container.status} for 2 s"
            )
        else:
            self.policy_after_docker_kill = (
                f"UNEXPECTED: after `docker kill` the container is {container.status}, "
                f"{listening}/{self.replicas} listening"
            )

    # -- cleanup ---------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove everything this run created; return what is still left (should be empty)."""
        if self.up_attempted:
            log(f"reuseport down {self.name}")
            self._down_quietly(self.name)
        for c in self.client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={self.name}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
        left: list[str] = []
        for filters in (
            {"label": f"{RUN_LABEL}={self.name}"},
            {"label": f"{rp_labels.SERVICE}={self.name}"},
        ):
            left += [
                f"container {c.name}"
                for c in self.client.containers.list(all=True, filters=filters)
            ]
        left += [f"file {p}" for p in sorted(self.store.root.glob(f"{self.name}.*"))]
        return left


# --------------------------------------------------------------------------- report


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def report(bench: Bench, info: dict[str, str]) -> dict[str, Any]:
    rp = bench.rp_scenarios[SIGKILL].summary()
    dk = bench.dk_scenario.summary()
    rows = [
        rp,
        dk,
        bench.rp_scenarios[DOCKER_KILL].summary(),
        bench.rp_scenarios[DOCKER_RM].summary(),
    ]
    return {
        "versions": info,
        "config": {
            "image": bench.args.image,
            "replicas": bench.replicas,
            "reuseport_port": bench.rp_port,
            "docker_policy_port": bench.dk_port,
            "service": bench.name,
            "backoff_reset": bench.args.backoff_reset,
            "gap_s": bench.args.gap,
            "poll_ms": POLL_S * 1000,
            "docker_stable_s": DOCKER_STABLE_S,
        },
        "scenarios": rows,
        "ratio_reuseport_over_docker_policy": {
            "median": ratio(rp["median_ms"], dk["median_ms"]),
            "p90": ratio(rp["p90_ms"], dk["p90_ms"]),
        },
        "docker_policy_after_manual_stop": bench.policy_after_docker_kill,
        "reuseport_restarts_counted": bench.restarts_seen,
        "trials": [
            {k: _round(v) if isinstance(v, float) else v for k, v in asdict(t).items()}
            for s in (*bench.rp_scenarios.values(), bench.dk_scenario)
            for t in s.trials
        ],
    }


def print_table(result: dict[str, Any]) -> None:
    v = result["versions"]
    c = result["config"]
    print(
        f"kernel {v['kernel']} | Docker Engine {v['docker_engine']} (API {v['docker_api']}) | "
        f"docker-py {v['docker_py']} | Python {v['python']} | reuseport {v['reuseport']} | "
        f"{v['cpus']} CPUs"
    )
    reset = c["backoff_reset"]
    print(
        f"setup: {c['replicas']} x {c['image']} per side, host network, one SO_REUSEPORT port "
        f"each: reuseport `up -d` on :{c['reuseport_port']}, "
        f"`docker run --restart always --init` on :{c['docker_policy_port']}"
    )
    print(
        "latency = kill -> a new LISTEN inode on the port and "
        f"{c['replicas']} listeners again (sock_diag polled every {c['poll_ms']:g} ms); "
        "SIGKILL trials alternate reuseport/docker-policy"
    )
    backoff = (
        f"--backoff-reset {reset:g}" if reset is not None else "the default backoff (reset 10 s)"
    )
    print(
        f"backoff: each side rotates over its {c['replicas']} containers; reuseport runs with "
        f"{backoff} and an index is killed only once the supervisor shows 0 failures for it; "
        f"a docker container only after >= {c['docker_stable_s']:g} s running (Docker's delay "
        f"stays at its 100 ms floor); >= {c['gap_s']:g} s between trials"
    )
    print()
    header = (
        f"{'scenario':36} {'trials':>6} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}  "
        f"{'docker-policy (same death)':28} {'ratio med':>9} {'ratio p90':>9}"
    )
    print(header)
    print("-" * len(header))
    rp, dk, kill, rm = result["scenarios"]
    ratios = result["ratio_reuseport_over_docker_policy"]

    def fmt(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    def line(label: str, row: dict[str, Any], base: str, r_med: str, r_p90: str) -> None:
        print(
            f"{label:36} {row['trials']:>6} {fmt(row['median_ms']):>10} {fmt(row['p90_ms']):>8} "
            f"{fmt(row['max_ms']):>8}  {base:28} {r_med:>9} {r_p90:>9}"
        )

    base = f"med {fmt(dk['median_ms'])} / p90 {fmt(dk['p90_ms'])}"
    med = f"{ratios['median']:.2f}" if ratios["median"] is not None else "-"
    p = f"{ratios['p90']:.2f}" if ratios["p90"] is not None else "-"
    line("reuseport, SIGKILL of app (host)", rp, base, med, p)
    one = "1.00" if dk["trials"] else "-"
    line("docker --restart always, SIGKILL", dk, "(this is the baseline)", one, one)
    line("reuseport, docker kill", kill, "n/a (no restart)", "-", "-")
    line("reuseport, docker rm -f", rm, "n/a (no restart)", "-", "-")
    print()
    print(
        "where the time goes (medians): kill -> new container/process started (Docker "
        f"StartedAt): reuseport {fmt(rp['kill_to_start_median_ms'])} ms, docker-policy "
        f"{fmt(dk['kill_to_start_median_ms'])} ms (of which exit -> restart "
        f"{fmt(dk['exit_to_start_median_ms'])} ms); the rest is the app starting to listen"
    )
    print(f"docker policy after `docker kill`: {result['docker_policy_after_manual_stop']}")
    if result["reuseport_restarts_counted"] is not None:
        expected = rp["trials"] + kill["trials"] + rm["trials"]
        print(
            f"reuseport ps: {result['reuseport_restarts_counted']} restarts counted "
            f"for {expected} killed replicas"
        )
    if ratios["median"] is not None:
        verdict = "no longer than" if ratios["median"] <= 1.0 else "LONGER than"
        print(
            f"answer: a lone crash costs reuseport {fmt(rp['median_ms'])} ms (median), "
            f"{verdict} Docker's restart policy ({fmt(dk['median_ms'])} ms): "
            f"ratio {ratios['median']:.2f} median, {ratios['p90']:.2f} p90"
        )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=15, help="SIGKILL trials per side")
    parser.add_argument(
        "--extra-trials", type=int, default=3, help="reuseport trials each for docker kill/rm -f"
    )
    parser.add_argument("--replicas", type=int, default=4, help="containers per side")
    parser.add_argument("--image", default="reuseport-demo:latest")
    parser.add_argument(
        "--port", type=int, default=0, help="first port to try (default: from 18080)"
    )
    parser.add_argument(
        "--backoff-reset",
        type=float,
        default=None,
        help="pass --backoff-reset to `reuseport up` (default: the tool's default, 10 s)",
    )
    parser.add_argument("--gap", type=float, default=1.2, help="seconds between trials")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.replicas < 1 or args.extra_trials < 0:
        parser.error("--trials and --replicas must be >= 1, --extra-trials >= 0")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        client = docker.from_env(timeout=60)
        info = versions(client)
    except docker.errors.DockerException as exc:
        log(f"setup failed: no Docker engine: {exc}")
        return 2
    bench = Bench(args, client)
    status = 0
    result: dict[str, Any] | None = None
    try:
        bench.setup()
        bench.run()
        bench.check_policy_after_docker_kill()
    except SetupError as exc:
        log(f"setup failed: {exc}")
        status = 2
    except TrialFailed as exc:
        log(f"trial failed: {exc}")
        status = 1
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        status = 130
    except (docker.errors.DockerException, subprocess.SubprocessError, OSError) as exc:
        log(f"failed: {type(exc).__name__}: {exc}")
        status = 2 if not bench.rp_scenarios[SIGKILL].trials else 1
    finally:
        # A second Ctrl-C (or SIGTERM) must not abort the cleanup.
        previous: dict[int, Callable[..., Any] | int | None] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            left = bench.cleanup()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if left:
            log(f"LEFT BEHIND: {', '.join(left)}")
            status = status or 1
    if bench.rp_scenarios[SIGKILL].trials or bench.dk_scenario.trials:
        result = report(bench, info)
        if args.json:
            print(json.dumps({**result, "exit_status": status}, indent=2))
        else:
            print_table(result)
    return status


if __name__ == "__main__":
    sys.exit(main())
