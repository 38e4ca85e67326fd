"""Replicas whose successors cannot start, under load: a crash-looping image, an app that
runs but never listens, and a hung replica whose successor crashes at start.

The service runs a tag of its own (``bench-faults-app<n>:<pid>``, first the demo image).
The fault re-points that tag at a broken image, as a bad push of a tag would, and then
removes or stops one replica; every successor the supervisor starts from the tag is
broken until the tag is pointed back at the demo image (the repair). Broken images, built
locally from the demo image (no pull):

* crash: ``ENV HEALTH_PORT=invalid``: the demo app exits 2 at start (a config error);
* silent: ``CMD python3 -c 'sleep'``: runs, never listens (the service has
  ``--start-timeout 2``, so each one is replaced after 2 s, under backoff).

Scenarios: crash loop (``docker kill`` of replica 1), never listens (``docker kill`` of
replica 1), hung + crashing successor (SIGSTOP of replica 2's app: after the 5 s hang
window its successors crash). Each runs with ``--backoff-max 4`` so the repaired service
comes back within seconds; creations per second (engine events) show backoff, not a hot
loop, and the running containers must stay within N + max surge. Reconvergence is timed
from the repair; app restarts are replicas gone other than the faulted one.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from collections.abc import Callable, Iterator

import docker.errors

from loadtest.faults.common import FaultContext, Scenario, container_gone
from loadtest.harness.results import FaultScenario

CRASH = 'FROM {base}\nENV HEALTH_PORT=invalid\nLABEL io.reuseport.bench="1"\n'
SILENT = (
    'FROM {base}\nCMD ["python3", "-c", "import time; time.sleep(3600)"]\n'
    'LABEL io.reuseport.bench="1"\n'
)
BACKOFF = ("--backoff-max", "4")


@contextlib.contextmanager
def broken_images(ctx: FaultContext) -> Iterator[dict[str, str]]:
    """The broken images, built for this run and removed after it."""
    built: dict[str, str] = {}
    try:
        for kind, dockerfile in (("crash", CRASH), ("silent", SILENT)):
            tag = f"bench-faults-{kind}:{os.getpid()}"
            source = io.BytesIO(dockerfile.format(base=ctx.image).encode())
            ctx.client.images.build(fileobj=source, tag=tag, pull=False, rm=True)
            built[kind] = tag
        yield built
    finally:
        for tag in built.values():
            with contextlib.suppress(docker.errors.APIError):
                ctx.client.images.remove(tag, force=True)


def run_startup_faults(ctx: FaultContext) -> list[FaultScenario]:
    broken_for_s = 4.0 if ctx.smoke else 12.0
    with broken_images(ctx) as images:
        return [
            _broken_successors(
                ctx, "crash loop", images["crash"], broken_for_s, "docker kill", BACKOFF
            ),
            _broken_successors(
                ctx,
                "never listens",
                images["silent"],
                broken_for_s + 2,
                "docker kill",
                (*BACKOFF, "--start-timeout", "2"),
            ),
            _broken_successors(
                ctx,
                "hung, successor crashes",
                images["crash"],
                broken_for_s + 6,  # the 5 s hang window comes first
                "SIGSTOP",
                (*BACKOFF, "--stop-timeout", "3"),
            ),
        ]


def _retag(ctx: FaultContext, source: str, target: str) -> None:
    repository, tag = target.rsplit(":", 1)
    ctx.client.api.tag(source, repository, tag, force=True)


def _broken_successors(
    ctx: FaultContext,
    name: str,
    broken: str,
    broken_for_s: float,
    how: str,
    up_extra: tuple[str, ...],
) -> FaultScenario:
    tag = f"bench-faults-app{ctx.count + 1}:{os.getpid()}"
    _retag(ctx, ctx.image, tag)
    index = 2 if how == "SIGSTOP" else 1
    try:
        with ctx.scenario(
            name,
            "start-up",
            f"{how} of replica {index} while the image's tag points at a broken image for "
            f"{broken_for_s:g} s, then repaired",
            up_extra=up_extra,
            image=tag,
        ) as scenario:
            before = scenario.replica_ids()
            victim = scenario.bench.rp_container(index)
            _retag(ctx, broken, tag)
            fault = scenario.fault(f"{how} ({name})", index)
            _inject(scenario, how, victim)
            time.sleep(broken_for_s)
            created = len(scenario.watcher.created) if scenario.watcher else 0
            _retag(ctx, ctx.image, tag)
            fault.since = time.time()
            took = scenario.reconverge(fault, container_gone(victim))
            scenario.note(f"{created} replicas created while the tag was broken")
            ctx.progress(f"faults: {name}: {created} successors tried; repaired in {took} s")
            after = scenario.replica_ids()
            scenario.result.app_restarts = len((before.keys() - {victim}) - after.keys())
    finally:
        with contextlib.suppress(docker.errors.APIError):
            ctx.client.images.remove(tag)
    return scenario.result


def _inject(scenario: Scenario, how: str, victim: str) -> None:
    bench = scenario.bench
    if how == "SIGSTOP":
        pid = bench.listener_of(bench.rp_port, victim).pids[0]
        os.kill(pid, signal.SIGSTOP)
        scenario.undo.append(_resume(pid))
    else:
        scenario.ctx.client.api.kill(victim)


def _resume(pid: int) -> Callable[[], None]:
    def resume() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    return resume
