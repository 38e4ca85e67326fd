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

The measuring is ``loadtest.harness.replacement``; this script parses the arguments and prints.

Usage: ``.venv/bin/python benchmarks/replace_latency.py [--trials 15] [--json]``.
Exit status: 0 ok, 1 a trial never recovered or something was left behind, 2 setup failed,
130 interrupted. Everything it creates is removed in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import docker.errors

if __package__ in (None, ""):  # run as a script: the repository root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.harness.bench import Bench, BenchConfig, log
from loadtest.harness.errors import SetupError, TrialFailed
from loadtest.harness.latency import SIGKILL
from loadtest.harness.replacement import (
    LatencyReport,
    ReplaceLatencyRun,
    ScenarioSummary,
    check_policy_after_docker_kill,
    report,
    run_trials,
    setup,
    versions,
)
from loadtest.harness.signals import signals_held, sigterm_as_interrupt
from reuseport.store import default_state_dir

DEFAULT_FIRST_PORT = 18080


def print_table(result: LatencyReport) -> None:
    v = result.versions
    c = result.config
    print(
        f"kernel {v['kernel']} | Docker Engine {v['docker_engine']} (API {v['docker_api']}) | "
        f"docker-py {v['docker_py']} | Python {v['python']} | reuseport {v['reuseport']} | "
        f"{v['cpus']} CPUs"
    )
    reset = c.backoff_reset
    print(
        f"setup: {c.replicas} x {c.image} per side, host network, one SO_REUSEPORT port "
        f"each: reuseport `up -d` on :{c.reuseport_port}, "
        f"`docker run --restart always --init` on :{c.docker_policy_port}"
    )
    print(
        "latency = kill -> a new LISTEN inode on the port and "
        f"{c.replicas} listeners again (sock_diag polled every {c.poll_ms:g} ms); "
        "SIGKILL trials alternate reuseport/docker-policy"
    )
    backoff = (
        f"--backoff-reset {reset:g}" if reset is not None else "the default backoff (reset 10 s)"
    )
    print(
        f"backoff: each side rotates over its {c.replicas} containers; reuseport runs with "
        f"{backoff} and an index is killed only once the supervisor shows 0 failures for it; "
        f"a docker container only after >= {c.docker_stable_s:g} s running (Docker's delay "
        f"stays at its 100 ms floor); >= {c.gap_s:g} s between trials"
    )
    print()
    header = (
        f"{'scenario':36} {'trials':>6} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}  "
        f"{'docker-policy (same death)':28} {'ratio med':>9} {'ratio p90':>9}"
    )
    print(header)
    print("-" * len(header))
    rp, dk, kill, rm = result.scenarios
    ratios = result.ratio_reuseport_over_docker_policy

    def fmt(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    def line(label: str, row: ScenarioSummary, base: str, r_med: str, r_p90: str) -> None:
        print(
            f"{label:36} {row.trials:>6} {fmt(row.median_ms):>10} {fmt(row.p90_ms):>8} "
            f"{fmt(row.max_ms):>8}  {base:28} {r_med:>9} {r_p90:>9}"
        )

    base = f"med {fmt(dk.median_ms)} / p90 {fmt(dk.p90_ms)}"
    med = f"{ratios.median:.2f}" if ratios.median is not None else "-"
    p = f"{ratios.p90:.2f}" if ratios.p90 is not None else "-"
    line("reuseport, SIGKILL of app (host)", rp, base, med, p)
    one = "1.00" if dk.trials else "-"
    line("docker --restart always, SIGKILL", dk, "(this is the baseline)", one, one)
    line("reuseport, docker kill", kill, "n/a (no restart)", "-", "-")
    line("reuseport, docker rm -f", rm, "n/a (no restart)", "-", "-")
    print()
    print(
        "where the time goes (medians): kill -> new container/process started (Docker "
        f"StartedAt): reuseport {fmt(rp.kill_to_start_median_ms)} ms, docker-policy "
        f"{fmt(dk.kill_to_start_median_ms)} ms (of which exit -> restart "
        f"{fmt(dk.exit_to_start_median_ms)} ms); the rest is the app starting to listen"
    )
    print(f"docker policy after `docker kill`: {result.docker_policy_after_manual_stop}")
    if result.reuseport_restarts_counted is not None:
        expected = rp.trials + kill.trials + rm.trials
        print(
            f"reuseport ps: {result.reuseport_restarts_counted} restarts counted "
            f"for {expected} killed replicas"
        )
    if ratios.median is not None:
        verdict = "no longer than" if ratios.median <= 1.0 else "LONGER than"
        print(
            f"answer: a lone crash costs reuseport {fmt(rp.median_ms)} ms (median), "
            f"{verdict} Docker's restart policy ({fmt(dk.median_ms)} ms): "
            f"ratio {ratios.median:.2f} median, {ratios.p90:.2f} p90"
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


def config_of(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        # The name must end in "-<pid>": Bench.cleanup_stale() reads the owner's pid from it.
        name=f"bench-replace-{os.getpid()}",
        state_dir=default_state_dir(),
        image=args.image,
        replicas=args.replicas,
        first_port=args.port or DEFAULT_FIRST_PORT,
        backoff_reset=args.backoff_reset,
        gap_s=args.gap,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with sigterm_as_interrupt():
        try:
            client = docker.from_env(timeout=60)
            info = versions(client)
        except docker.errors.DockerException as exc:
            log(f"setup failed: no Docker engine: {exc}")
            return 2
        run = ReplaceLatencyRun(Bench(config_of(args), client))
        status = measure(run, args.trials, args.extra_trials)
    if run.measured:
        result = report(run, info)
        if args.json:
            print(json.dumps({**result.to_json(), "exit_status": status}, indent=2))
        else:
            print_table(result)
    return status


def measure(run: ReplaceLatencyRun, trials: int, extra_trials: int) -> int:
    """Set up, run the trials, clean up whatever happens; the exit status."""
    status = 0
    try:
        setup(run.bench)
        run_trials(run, trials, extra_trials)
        check_policy_after_docker_kill(run)
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
        status = 1 if run.rp_scenarios[SIGKILL].trials else 2
    finally:
        try:
            with signals_held():
                left = run.bench.cleanup()
        except KeyboardInterrupt:  # a Ctrl-C during the cleanup: after it, as interrupted
            status = status or 130
        if left:
            log(f"LEFT BEHIND: {', '.join(left)}")
            status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
