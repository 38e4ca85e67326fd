"""The load benchmark in one command: `loadtest/run` (or `.venv/bin/python -m loadtest`).

In one run on this machine, with the same demo image and replica count: throughput and
latency of reuseport against nginx, HAProxy, the no-hop "limit" and a single replica (wrk),
the kernel's per-replica share of connections, latency at equal offered load (h2load,
open loop, at fractions of nginx's maximum), a chaos run under locust load, a rollout, a
scale-out, a hung (SIGSTOPped) replica under load: reuseport's hang detection against
Docker's HEALTHCHECK with --restart always, a fault suite (replica, supervisor,
state-file and start-up faults and a soak, each under locust load), and the cost of an
idle detached supervisor at 4, 32 and 128 replicas and of `up` against parallel
`docker run`. Writes results.json,
results.md and PNG charts to --out; --update-readme puts the table into README.md. --smoke
runs every part for a few seconds (CI uses it so the benchmark never rots; its figures mean
nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import docker

import reuseport
from loadtest import report
from loadtest.harness.bench import log as say
from loadtest.harness.errors import BenchError
from loadtest.harness.results import LoadtestResults, Machine
from loadtest.harness.signals import sigterm_as_interrupt

REPO = Path(__file__).resolve().parent.parent
IMAGES = ("reuseport-demo:latest", "reuseport:latest")
PARTS = ("throughput", "latency", "chaos", "rollout", "scaleout", "hang", "faults", "cost")
# What a service of the user's file can be put through (the other parts need the demo's v1
# and v2 images, its /slow endpoint or its health port).
FILE_PARTS = ("throughput", "latency")
DEFAULT_OUT = REPO / "loadtest" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--replicas", type=int, default=None, help="replicas per setup (4; with --file, its count)"
    )
    parser.add_argument("--duration", type=float, default=10, help="seconds per wrk run (10)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="wrk runs per setup, alternating (5)"
    )
    parser.add_argument(
        "--connections", type=int, default=64, help="wrk keep-alive connections (64)"
    )
    parser.add_argument(
        "--latency-duration", type=float, default=10, help="seconds per setup per rate (10)"
    )
    parser.add_argument("--chaos-duration", type=float, default=30, help="seconds of kills (30)")
    parser.add_argument("--kill-every", type=float, default=5, help="seconds between kills (5)")
    parser.add_argument("--users", type=int, default=40, help="locust users per run (40)")
    parser.add_argument("--scaleout", type=int, default=16, help="replicas for the scale-out (16)")
    parser.add_argument(
        "--hang-duration",
        type=float,
        default=20,
        help="seconds of load after a replica is SIGSTOPped, per setup (20)",
    )
    parser.add_argument(
        "--faults", type=int, default=100, help="random replica faults in the faults part (100)"
    )
    parser.add_argument(
        "--soak", type=float, default=120, help="seconds of churn in the faults part's soak (120)"
    )
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run ({','.join(PARTS)})")
    parser.add_argument("--base-port", type=int, default=18100, help="first port used (18100)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="results folder (loadtest/results)",
    )
    parser.add_argument("--update-readme", action="store_true", help="put the table into README.md")
    parser.add_argument("--smoke", action="store_true", help="a few seconds per part (CI)")
    parser.add_argument(
        "--file",
        type=Path,
        help="measure a service of this project file (reuseport.toml) instead of the demo: "
        f"its image, count and options, started with `up -f`; parts {','.join(FILE_PARTS)}",
    )
    parser.add_argument("--service", help="with --file: the service to measure (its only one)")
    args = parser.parse_args(argv)
    args.project = None
    if args.file is not None:
        from_file(parser, args)
    elif args.service is not None:
        parser.error("--service goes with --file")
    args.replicas = args.replicas or 4
    unknown = set(args.only.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
    if not 1 <= args.replicas <= 64:
        parser.error("--replicas must be between 1 and 64")
    if args.hang_duration <= 0:
        parser.error("--hang-duration must be > 0")
    if args.smoke:
        args.duration, args.repeats, args.chaos_duration = 1.0, 1, 8.0
        args.kill_every, args.users, args.scaleout = 3.0, 10, 4
        args.latency_duration = 2.0
        # Just past reuseport's 5 s hang window, so the replacement still happens.
        args.hang_duration = 8.0
    return args


def from_file(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Check the options that go with --file and load its service into ``args.project``."""
    only = args.only.split(",") if args.only != ",".join(PARTS) else list(FILE_PARTS)
    demo_only = [part for part in only if part not in FILE_PARTS]
    if demo_only:
        parser.error(
            f"--file: the {', '.join(demo_only)} part(s) need the demo images; "
            f"with a file: --only {','.join(FILE_PARTS)}"
        )
    if args.update_readme:
        parser.error("--file: README's figures are the demo's; --update-readme goes without it")
    from loadtest.harness.errors import SetupError
    from loadtest.harness.fromfile import load_service

    try:
        args.project = load_service(args.file, args.service)
    except SetupError as exc:
        parser.exit(2, f"loadtest: {exc}\n")
    args.only = ",".join(only)
    args.replicas = args.replicas or args.project.spec.replicas
    if args.out == DEFAULT_OUT:
        args.out = DEFAULT_OUT / f"file-{args.project.name}"


def machine() -> Machine:
    client = docker.from_env()
    try:
        engine = client.version().get("Version", "?")
    finally:
        client.close()
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cores=os.cpu_count(),
        kernel=platform.release(),
        docker=engine,
        python=platform.python_version(),
        reuseport=reuseport.__version__,
    )


def require_images(images: tuple[str, ...]) -> None:
    client = docker.from_env()
    try:
        for image in images:
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                build = "scripts/build-images" if image in IMAGES else f"docker build -t {image}"
                sys.exit(f"loadtest: image {image} is missing: run {build}")
    finally:
        client.close()


def carry_over(results: LoadtestResults, previous_json: Path, parts: list[str]) -> None:
    """Parts not run now keep their figures from the previous results.json (same kind of
    run: smoke or full), so `--only X --update-readme` does not drop the others' table."""
    if not previous_json.exists():
        return
    previous = LoadtestResults.from_json(json.loads(previous_json.read_text()))
    if previous.smoke != results.smoke:
        return
    for part in PARTS:
        if part not in parts and getattr(previous, part) is not None:
            setattr(results, part, getattr(previous, part))
            results.carried_over.append(part)
    if results.carried_over:
        results.carried_from = previous.carried_from or previous.machine.date


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM cleans up like Ctrl-C: every part tears down in its finally.
    with sigterm_as_interrupt():
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    parts = args.only.split(",")
    project = args.project
    image = project.spec.image if project else IMAGES[0]
    require_images((image, IMAGES[1]) if project else IMAGES)
    from loadtest import chaos, cost, faults, hang, openloop, rolling, scaleout, setups, throughput

    setups.ensure_packages(["wrk", "nginx", "haproxy"])
    openloop.ensure_h2load()
    command = "loadtest/run " + shlex.join(argv if argv is not None else sys.argv[1:])
    results = LoadtestResults(machine=machine(), command=command.strip(), smoke=args.smoke)
    if project is not None:
        results.workload = f"{project.name} ({image}) of {args.file}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="reuseport-loadtest-") as work:
        if "throughput" in parts:
            say(
                f"throughput: {args.replicas} replicas, "
                f"{args.repeats} x {args.duration:g} s per setup"
            )
            results.throughput = throughput.run_throughput(
                image,
                args.replicas,
                args.base_port,
                args.duration,
                args.repeats,
                args.connections,
                progress=say,
                project=project,
            )
        if "latency" in parts:
            fractions = openloop.SMOKE_FRACTIONS if args.smoke else openloop.FULL_FRACTIONS
            say(
                f"latency: h2load at {', '.join(f'{f:.0%}' for f in fractions)} of nginx's "
                f"maximum, {args.latency_duration:g} s per setup per rate"
            )
            results.latency = openloop.run_latency(
                image,
                args.replicas,
                args.base_port + 50,
                args.latency_duration,
                args.connections,
                fractions,
                proxy_max=openloop.proxy_max_of(results.throughput),
                max_duration_s=args.duration,
                progress=say,
                project=project,
            )
        if "chaos" in parts:
            say(f"chaos: a kill every {args.kill_every:g} s for {args.chaos_duration:g} s")
            results.chaos = chaos.run_chaos(
                image,
                args.replicas,
                args.base_port + 100,
                args.chaos_duration,
                args.kill_every,
                args.users,
                Path(work),
                progress=say,
            )
        if "rollout" in parts:
            say(
                "rollout: v1 -> v2 under load, with tcp_migrate_req=1 then 0; "
                "under overload, hash and steered"
            )
            results.rollout = rolling.run_rollout(
                "reuseport-demo:v1",
                "reuseport-demo:v2",
                args.replicas,
                args.base_port + 150,
                args.users,
                Path(work),
                progress=say,
            )
        if "scaleout" in parts:
            say(f"scale-out: up --replicas {args.scaleout}")
            results.scaleout = scaleout.run_scaleout(
                image, args.scaleout, args.base_port + 200, progress=say
            )
        if "hang" in parts:
            say(
                f"hang: SIGSTOP of one replica under load, {args.hang_duration:g} s after it: "
                "reuseport, then Docker HEALTHCHECK + restart always"
            )
            results.hang = hang.run_hang(
                image,
                args.replicas,
                args.base_port + 250,
                args.hang_duration,
                args.users,
                Path(work),
                progress=say,
                # The smoke run needs the shape, not a steady load: every user runs already.
                warmup_s=1.0 if args.smoke else hang.WARMUP_S,
            )
        if "faults" in parts:
            say("faults: replica, supervisor, state-file and start-up faults and a soak")
            results.faults = faults.run_faults(
                image,
                args.replicas,
                args.base_port + 300,
                args.users,
                Path(work),
                smoke=args.smoke,
                random_faults=args.faults,
                soak_s=args.soak,
                supervisor_kills=10,
                progress=say,
            )
        if "cost" in parts:
            counts = cost.SMOKE_COUNTS if args.smoke else cost.FULL_COUNTS
            sample_s = cost.SMOKE_SAMPLE_S if args.smoke else cost.FULL_SAMPLE_S
            say(f"cost: idle supervisor at {counts} replicas, {sample_s:g} s each; start-up")
            results.cost = cost.run_cost(
                image,
                counts,
                sample_s,
                args.scaleout,
                args.base_port + 500,
                progress=say,
                startup=results.scaleout,
            )
    results.elapsed_s = round(time.monotonic() - started, 1)
    carry_over(results, args.out / "results.json", parts)
    written = report.write(results, args.out)
    # The table from what results.json says, so the two can never disagree.
    written_back = json.loads((args.out / "results.json").read_text())
    table = report.markdown(LoadtestResults.from_json(written_back))
    print(table)
    if args.update_readme:
        report.update_readme(REPO / "README.md", table)
        written.append(REPO / "README.md")
    say(f"done in {results.elapsed_s:g} s; wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; everything it started was removed")
        sys.exit(130)
    except BenchError as exc:
        # Every part tears down in its finally before this is reached.
        say(f"failed: {exc}")
        sys.exit(2)
