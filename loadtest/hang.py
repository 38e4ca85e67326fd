"""A hung replica under load: reuseport's hang detection against Docker's HEALTHCHECK.

A replica that is alive but stuck (here: its process SIGSTOPped) keeps its LISTEN socket,
so the kernel keeps handing it about 1/N of the new connections, which wait in its accept
queue for nobody. Three setups on the same image, one after the other so each has the whole
machine, all with ``replicas`` replicas in the host network sharing one SO_REUSEPORT port:

* reuseport: ``up -d --stop-timeout 3 --balance hash`` (the kernel's 4-tuple hash picks
  the listener) with the default ``--hang-window`` (5 s). Once a
  replica leaves connections in its accept queue untaken for the window, the supervisor
  starts a successor, and once that listens it closes the hung replica's listener
  (SOCK_DESTROY; with ``net.ipv4.tcp_migrate_req=1`` the queued connections move to the
  live replicas) and stops it (SIGTERM, SIGKILL after the stop timeout).
* steered: the same with ``--balance round-robin`` (the tool's default): the eBPF program
  picks the listener from the ready replicas, and the supervisor takes a suspect replica
  out of that map before the hang window ends, so it stops getting new connections early.
* Docker: plain ``--restart always --init`` containers, each with its own ``HEALTH_PORT``
  and a Docker HEALTHCHECK that GETs ``/healthz`` there (python3 from the image, 1 s
  timeout; every 1 s, 3 retries). Docker only marks the container ``unhealthy`` and never
  restarts it (moby#28400); ``--restart always`` does nothing for a stopped-but-alive
  process. This is what Docker alone offers against a hang.

Per setup: locust (subprocess, both user classes in one run, ``users`` users) on the port;
after a warm-up, SIGSTOP of the listening host process of replica 2 (found from the kernel:
the LISTEN socket on the port held by that container); the load goes on for ``duration_s``
after the SIGSTOP; then locust stops and the setup is torn down (``reuseport down`` and a
label sweep: removal SIGKILLs, which works on a stopped process too).

Locust runs with a 5 s network timeout (``LOCUST_NETWORK_TIMEOUT``): with its default of
60 s a request stuck on the stopped replica would outlive the run and never count.

While the load runs, sock_diag is polled every 20 ms (as chaos and ``replace_latency`` do):
the first LISTEN socket on the port that was not there at the SIGSTOP (a successor), the
moment the stopped replica's listener is gone, the stopped process gone, and its accept
queue. On the Docker side ``docker inspect`` is read every 100 ms for the health status
(it changes at most once per 1 s check). Every figure is None when it never happened.

``net.ipv4.tcp_migrate_req`` is set to 1 for the whole part (both setups alike) and put back
to its previous value at the end, whatever happens.

Try it alone: ``.venv/bin/python -m loadtest.hang --duration 12`` (prints the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from loadtest import hangopen, locustrun
from loadtest.hangwatch import POLL_S, figures, stop_and_watch
from loadtest.harness import jsonable
from loadtest.harness.bench import Bench, BenchConfig, log
from loadtest.harness.errors import BenchError, SetupError
from loadtest.harness.openhang import OpenHangFigures
from loadtest.harness.results import HangFigures, HangResult, HealthSettings
from loadtest.harness.signals import signals_held, sigterm_as_interrupt
from reuseport import host
from reuseport.store import default_state_dir

WARMUP_S = 3.0  # every user runs and the load is steady before the SIGSTOP
NETWORK_TIMEOUT_S = 5.0  # locust's per-request limit here (its default 60 s outlives the run)
HANG_WINDOW_S = 5.0  # reuseport's default --hang-window: not passed, the default is measured
STOP_TIMEOUT_S = 3
VICTIM = 2  # replica index (1-based) that gets SIGSTOPped, as in test_liveness
HEALTH_INTERVAL_S = 1.0
HEALTH_HTTP_TIMEOUT_S = 1.0
# Docker's own limit on one check run, above the probe's HTTP timeout so a failure is the
# app not answering in 1 s, not Docker killing a slow python3 start-up.
HEALTH_CHECK_TIMEOUT_S = 3.0
HEALTH_RETRIES = 3
HEALTHY_TIMEOUT_S = 30.0
SETUPS = ("reuseport", "steered", "docker")
# The tool's setups, one after the other: name -> its `up --balance`.
BALANCES = {"reuseport": "hash", "steered": "round-robin"}

# Runs inside the container (python3 from the image): a 4xx/5xx answer raises HTTPError, a
# silent one TimeoutError; either exits 1, which Docker counts as a failed check.
HEALTH_PROBE = (
    "import os, urllib.request; "
    "urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTH_PORT'], "
    f"timeout={HEALTH_HTTP_TIMEOUT_S:g})"
)


def run_hang(
    image: str,
    replicas: int,
    port: int,
    duration_s: float,
    users: int,
    workdir: Path,
    progress: Callable[[str], None] = print,
    warmup_s: float = WARMUP_S,
) -> HangResult:
    """SIGSTOP one replica under locust load: reuseport with --balance hash, then steered
    (--balance round-robin), then Docker; figures.

    ``warmup_s``: load before the SIGSTOP (the smoke run shortens it)."""
    before = host.tcp_migrate_req()
    if before is None:
        return HangResult(skipped="this kernel has no net.ipv4.tcp_migrate_req (Linux >= 5.14)")
    workdir.mkdir(parents=True, exist_ok=True)
    client = docker.from_env(timeout=60)
    config = BenchConfig(
        name=f"bench-hang-{os.getpid()}",
        state_dir=default_state_dir(),
        image=image,
        replicas=replicas,
        first_port=port,
    )
    bench = Bench(config, client)
    victim = min(VICTIM, replicas)
    found: dict[str, HangFigures] = {}
    open_loop: dict[str, OpenHangFigures] = {}
    left: list[str] = []
    migrate_set = False
    with sigterm_as_interrupt():
        try:
            bench.check_images()
            bench.cleanup_stale()
            health_ports = bench.take_ports(extra=replicas)
            _set_migrate_req(1)
            migrate_set = True
            progress(
                f"hang: net.ipv4.tcp_migrate_req=1 for this part (was {before}); "
                f"SIGSTOP of replica {victim} of {replicas} after {warmup_s:g} s of load, "
                f"{duration_s:g} s of load after it, locust network timeout "
                f"{NETWORK_TIMEOUT_S:g} s"
            )
            # The tool's setups first, each torn down completely before the next starts.
            for setup, balance in BALANCES.items():
                up = ["--stop-timeout", str(STOP_TIMEOUT_S), "--balance", balance]
                bench.start_reuseport(extra=up)
                if balance != "hash":
                    bench.wait_steered(bench.name, balance)
                found[setup] = _under_load(
                    bench, setup, victim, users, warmup_s, duration_s, workdir, progress
                )
                found[setup].replacements = _replacements(bench)
                left += bench.cleanup()  # `down` is done; the last sweep needs only labels
                bench.start_reuseport(extra=up)
                if balance != "hash":
                    bench.wait_steered(bench.name, balance)
                open_loop[setup] = hangopen.run_open(
                    bench, setup, victim, hangopen.RATE, NETWORK_TIMEOUT_S, warmup_s,
                    duration_s, workdir, progress,
                )  # fmt: skip
                open_loop[setup].description = _description(setup)
                open_loop[setup].replacements = _replacements(bench)
                left += bench.cleanup()
            _start_docker_health(bench, health_ports, progress)
            found["docker"] = _under_load(
                bench, "docker", victim, users, warmup_s, duration_s, workdir, progress
            )
            _add_docker_state(found["docker"], bench, victim)
            found["docker"].health_ports = health_ports
        finally:
            with signals_held():
                left += bench.cleanup()
                if migrate_set:
                    _set_migrate_req(before)
            if left:
                progress(f"hang: LEFT BEHIND: {', '.join(left)}")
            client.close()
    restored = host.tcp_migrate_req()
    return HangResult(
        replicas=replicas,
        users=users,
        user_classes=list(locustrun.USER_CLASSES),
        user_rps=locustrun.USER_RPS,
        warmup_s=warmup_s,
        duration_s=duration_s,
        stopped_replica=victim,
        network_timeout_s=NETWORK_TIMEOUT_S,
        hang_window_s=HANG_WINDOW_S,
        stop_timeout_s=STOP_TIMEOUT_S,
        health=HealthSettings(HEALTH_INTERVAL_S, HEALTH_HTTP_TIMEOUT_S, HEALTH_RETRIES),
        tcp_migrate_req=1,
        tcp_migrate_req_before=before,
        tcp_migrate_req_restored=restored == before,
        poll_ms=POLL_S * 1000,
        setups=found,
        open_rate=hangopen.RATE,
        open_loop=open_loop,
        left_behind=left,
    )


def _set_migrate_req(value: int) -> None:
    try:
        host.TCP_MIGRATE_REQ.write_text(f"{value}\n")
    except OSError as exc:
        raise SetupError(
            f"cannot set net.ipv4.tcp_migrate_req={value} ({exc.strerror}): run as root"
        ) from exc


# --------------------------------------------------------------------------- setups


def _start_docker_health(
    bench: Bench, health_ports: list[int], progress: Callable[[str], None]
) -> None:
    """``Bench.start_docker_policy``'s containers, each with a HEALTHCHECK on its own
    health port; returns once Docker calls every one healthy."""
    progress(
        f"hang: docker: {bench.replicas} --restart always containers on :{bench.dk_port}, "
        f"HEALTHCHECK GET /healthz on health ports {', '.join(map(str, health_ports))}"
    )
    seconds = 1_000_000_000  # the Engine API counts health timings in nanoseconds
    bench.start_docker_policy(
        health_ports,
        healthcheck={
            "test": ["CMD", "python3", "-c", HEALTH_PROBE],
            "interval": int(HEALTH_INTERVAL_S * seconds),
            "timeout": int(HEALTH_CHECK_TIMEOUT_S * seconds),
            "retries": HEALTH_RETRIES,
        },
    )
    # The load starts on containers Docker itself calls healthy, so "unhealthy" later is
    # the SIGSTOP's doing.
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while True:
        status = {c.name: _health(bench, c.id) for c in bench.dk_containers}
        if all(s == "healthy" for s in status.values()):
            return
        if time.monotonic() > deadline:
            raise SetupError(
                f"Docker does not call every container healthy after {HEALTHY_TIMEOUT_S:g} s: "
                + ", ".join(f"{name} {s}" for name, s in status.items())
            )
        time.sleep(0.2)


def _health(bench: Bench, container_id: str) -> str:
    state = bench.client.api.inspect_container(container_id)["State"]
    return str((state.get("Health") or {}).get("Status", "none"))


# --------------------------------------------------------------------------- one setup


def _under_load(
    bench: Bench,
    setup: str,
    index: int,
    users: int,
    warmup_s: float,
    duration_s: float,
    workdir: Path,
    progress: Callable[[str], None],
) -> HangFigures:
    port = bench.dk_port if setup == "docker" else bench.rp_port
    files = locustrun.LocustFiles(workdir, f"hang_{setup}")
    locust = locustrun.start(
        port, users, duration_s, files, margin_s=warmup_s, network_timeout_s=NETWORK_TIMEOUT_S
    )
    try:
        load_start = locustrun.wait_ready(locust, files)
        _sleep_until(load_start + warmup_s)
        stop_wall, watch = stop_and_watch(
            bench,
            setup,
            index,
            port,
            duration_s,
            lambda victim: progress(
                f"hang: {setup}: SIGSTOP of replica {index} (pid {victim.pid}) under load "
                f"({users} users on :{port}); watching for {duration_s:g} s"
            ),
            (lambda victim: lambda: _health(bench, victim.container_id))
            if setup == "docker"
            else None,
        )
        end_wall = time.time()
        locustrun.stop(locust)
        stats = json.loads(files.stdout.read_text() or "[]")
        recorded = json.loads(files.replicas.read_text())
    except (OSError, ValueError) as exc:
        raise SetupError(f"hang: {setup}: {type(exc).__name__}: {exc}") from exc
    finally:
        locustrun.stop(locust)
    result = figures(
        _description(setup), port, stats, recorded, watch, stop_wall, load_start, end_wall
    )
    progress(
        f"hang: {setup}: successor listening after {_s(watch.successor_listening_s)}, "
        f"stopped listener gone after {_s(watch.stopped_listener_gone_s)}, unhealthy after "
        f"{_s(watch.unhealthy_s)}; {result.ok:,} ok, {result.slow} slow (> 1 s), "
        f"{result.failures} failed"
    )
    return result


def _description(setup: str) -> str:
    if setup == "docker":
        return (
            "docker run --restart always --init, HEALTHCHECK GET /healthz on its own port "
            f"every {HEALTH_INTERVAL_S:g} s, timeout {HEALTH_HTTP_TIMEOUT_S:g} s, "
            f"{HEALTH_RETRIES} retries"
        )
    return (
        f"reuseport up -d --balance {BALANCES[setup]}, --hang-window {HANG_WINDOW_S:g} "
        f"(default), --stop-timeout {STOP_TIMEOUT_S}"
    )


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def _sleep_until(wall: float) -> None:
    delay = wall - time.time()
    if delay > 0:
        time.sleep(delay)


def _replacements(bench: Bench) -> dict[str, int] | None:
    """What ``reuseport ps`` says it replaced, by reason (a cross-check: {"hung": 1})."""
    try:
        rows = bench.cli.ps(bench.name)
    except (SetupError, subprocess.SubprocessError, ValueError):
        return None
    return dict(rows[0].get("replacements") or {}) if rows else None


def _add_docker_state(figures: HangFigures, bench: Bench, index: int) -> None:
    """Docker's own view of the stopped container at the end: still "running", unhealthy,
    never restarted."""
    state = bench.client.api.inspect_container(bench.dk_containers[index - 1].id)
    health = state["State"].get("Health") or {}
    figures.restart_count = state.get("RestartCount")
    figures.docker_state = state["State"].get("Status")
    figures.health_status = health.get("Status")
    figures.failing_streak = health.get("FailingStreak")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="a SIGSTOPped replica under locust load (one part of loadtest)"
    )
    parser.add_argument("--image", default="reuseport-demo:latest")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--port", type=int, default=18350, help="first port tried (18350)")
    parser.add_argument("--duration", type=float, default=20.0, help="load after the SIGSTOP")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.replicas < 1 or args.users < 1:
        parser.error("--duration must be > 0, --replicas and --users >= 1")

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            result = run_hang(
                args.image,
                args.replicas,
                args.port,
                args.duration,
                args.users,
                workdir,
                progress=log,
            )
        except BenchError as exc:
            log(f"hang: failed: {exc}")
            return 2
    print(json.dumps(jsonable.to_json(result), indent=2))
    return 1 if result.left_behind else 0


if __name__ == "__main__":
    sys.exit(main())
