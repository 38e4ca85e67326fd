"""The hang part's open-loop run: the tool's setups (hash, steered) with a SIGSTOPped
replica under a fixed rate of independent requests (``loadtest.openclient``).

Why a second load model: with locust's 40 users every user soon waits on a request stuck
on the hung replica, in either setup, and then stops asking; its failures count users,
not requests, so they cannot show how soon the replica stopped being handed new ones. An
open-loop client keeps sending at the same rate whatever is stuck, like a crowd of
independent clients. Then the failed requests are the ones handed to the hung replica
before it was isolated (plus those stuck on it already), and ``hurt_until_s``, the send
time of the last failed or slow request, says when that stopped: the hang window on the
hash, the suspicion window when steered.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.hangwatch import stop_and_watch
from loadtest.harness.bench import Bench
from loadtest.harness.errors import SetupError
from loadtest.harness.openhang import OpenHangFigures, OpenSecond

RATE = 800.0  # requests/s: the locust run's offered load (40 users x 20/s)
SLOW_S = 1.0
READY_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parent.parent


def run_open(
    bench: Bench,
    setup: str,
    index: int,
    rate: float,
    timeout_s: float,
    warmup_s: float,
    duration_s: float,
    workdir: Path,
    progress: Callable[[str], None],
) -> OpenHangFigures:
    """SIGSTOP replica ``index`` of the bench's reuseport service ``warmup_s`` into an
    open-loop load at ``rate``; the load goes on for ``duration_s`` after it."""
    port = bench.rp_port
    out, ready = workdir / f"open_{setup}.json", workdir / f"open_{setup}.ready"
    for stale in (out, ready):
        stale.unlink(missing_ok=True)
    command = [
        sys.executable, "-m", "loadtest.openclient", "--port", str(port), "--rate", f"{rate:g}",
        "--duration", f"{warmup_s + duration_s:g}", "--timeout", f"{timeout_s:g}",
        "--out", str(out), "--ready", str(ready),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    client = subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if client.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"hang: {setup}: the open-loop client did not start")
            time.sleep(0.05)
        time.sleep(warmup_s)
        stop_wall, watch = stop_and_watch(
            bench,
            setup,
            index,
            port,
            duration_s,
            lambda victim: progress(
                f"hang: {setup}, open loop: SIGSTOP of replica {index} (pid {victim.pid}) "
                f"under {rate:g} requests/s on :{port}; watching for {duration_s:g} s"
            ),
        )
        client.wait(timeout=timeout_s + 30)
        data = json.loads(out.read_text())
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"hang: {setup}, open loop: {type(exc).__name__}: {exc}") from exc
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    result = open_figures(data, stop_wall, port)
    result.successor_listening_s = _round2(watch.successor_listening_s)
    result.stopped_listener_gone_s = _round2(watch.stopped_listener_gone_s)
    result.stopped_accept_queue_max = watch.stopped_accept_queue_max
    progress(
        f"hang: {setup}, open loop: {result.ok:,} ok, {result.slow} slow (> {SLOW_S:g} s), "
        f"{result.failures} failed; the last request hurt was sent "
        f"{_s(result.hurt_until_s)} after the SIGSTOP"
    )
    return result


def open_figures(data: dict[str, Any], stop_wall: float, port: int) -> OpenHangFigures:
    """The figures of the open-loop client's ``data`` (see ``loadtest.openclient``) around a
    SIGSTOP at ``stop_wall``."""
    since_stop = stop_wall - float(data["started_at"])
    seconds: dict[int, OpenSecond] = {}
    errors: Counter[str] = Counter()
    hurt: list[float] = []
    ok = slow = 0
    for sent_s, latency, error in data["requests"]:
        t = float(sent_s) - since_stop
        second = seconds.setdefault(int(t // 1), OpenSecond(t_s=float(t // 1)))
        if error:
            errors[str(error)] += 1
            second.failed += 1
        else:
            ok += 1
            if latency > SLOW_S:
                slow += 1
                second.slow += 1
            else:
                second.fast += 1
        if (error or latency > SLOW_S) and t >= 0:
            hurt.append(t)
    failed = sum(errors.values())
    return OpenHangFigures(
        port=port,
        rate=float(data["rate"]),
        requests=ok + failed,
        ok=ok,
        slow=slow,
        slow_s=SLOW_S,
        failures=failed,
        failures_by_error=dict(errors),
        hurt_until_s=round(max(hurt), 2) if hurt else None,
        hurt_later_than_1s=sum(1 for t in hurt if t > 1.0),
        per_second=[seconds[k] for k in sorted(seconds)],
    )


def lowest_over_median(per_second: list[OpenSecond]) -> float | None:
    """The lowest share of requests answered in time in a second after the SIGSTOP, over
    the median before it (1.0: no dip)."""
    whole = per_second[1:-1]  # the first and the last second are cut by the run's ends
    before = [s.fast for s in whole if s.t_s < 0]
    after = [s.fast for s in whole if s.t_s >= 0]
    if not before or not after or not statistics.median(before):
        return None
    return round(min(after) / statistics.median(before), 2)


def _round2(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"
