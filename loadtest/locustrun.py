"""Locust as a subprocess (importing it would monkey-patch this process with gevent).

Shared by the chaos and rollout scenarios: start a headless run of ``locustfile.py`` with
both user classes, wait until every user runs, stop it, read what it recorded.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from loadtest.harness.errors import SetupError

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = ("KeepAliveUser", "NewConnectionUser")
READY_TIMEOUT_S = 60.0
USER_RPS = 20.0  # per user: 40 users -> ~800 req/s, well below what 2 cores serve


class LocustFiles:
    def __init__(self, workdir: Path, prefix: str) -> None:
        self.csv = workdir / prefix  # locust adds _stats.csv, _stats_history.csv, ...
        self.replicas = workdir / f"{prefix}_replicas.json"
        self.ready = workdir / f"{prefix}_ready.json"
        self.stdout = workdir / f"{prefix}_locust.json"  # --json: locust's final stats
        self.stderr = workdir / f"{prefix}_locust.log"


def locust_bin() -> str:
    beside = Path(sys.executable).with_name("locust")
    return str(beside) if beside.exists() else "locust"


def start(
    port: int,
    users: int,
    duration_s: float,
    files: LocustFiles,
    margin_s: float = 0.0,
    user_classes: tuple[str, ...] = USER_CLASSES,
    network_timeout_s: float | None = None,
) -> subprocess.Popen[bytes]:
    """``network_timeout_s``: how long a request may wait (connect, answer) before it fails;
    None keeps locust's default (60 s)."""
    for stale in (files.replicas, files.ready):
        stale.unlink(missing_ok=True)
    # We stop locust with SIGTERM when the kills are done; --run-time only bounds it in
    # case this process dies without its finally (e.g. SIGKILL).
    safety = math.ceil(duration_s + margin_s + 120)
    command = [
        locust_bin(),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "--run-time",
        f"{safety}s",
        "--host",
        f"http://127.0.0.1:{port}",
        "--csv",
        str(files.csv),
        "--json",
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        *user_classes,
    ]
    env = {
        **os.environ,
        "LOCUST_REPLICA_FILE": str(files.replicas),
        "LOCUST_READY_FILE": str(files.ready),
        "LOCUST_USER_RPS": str(USER_RPS),
    }
    if network_timeout_s is not None:
        env["LOCUST_NETWORK_TIMEOUT"] = str(network_timeout_s)
    else:
        env.pop("LOCUST_NETWORK_TIMEOUT", None)  # one set in our own environment must not leak in
    with open(files.stdout, "wb") as out, open(files.stderr, "wb") as err:
        # Own session: a Ctrl-C at the terminal reaches only us; we stop locust in finally.
        return subprocess.Popen(
            command, stdout=out, stderr=err, env=env, start_new_session=True, cwd=files.csv.parent
        )


def wait_ready(locust: subprocess.Popen[bytes], files: LocustFiles) -> float:
    """Wall-clock time at which every locust user was running (the load start)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not files.ready.exists():
        if locust.poll() is not None:
            tail = files.stderr.read_text(errors="replace")[-2000:]
            raise SetupError(f"locust exited {locust.returncode} before the load:\n{tail}")
        if time.monotonic() > deadline:
            raise SetupError(f"locust did not spawn its users within {READY_TIMEOUT_S:g} s")
        time.sleep(0.05)
    return float(json.loads(files.ready.read_text())["started_at"])


def stop(locust: subprocess.Popen[bytes]) -> None:
    """SIGTERM (locust then writes its stats and our JSON), SIGKILL if it hangs."""
    if locust.poll() is not None:
        return
    locust.terminate()
    try:
        locust.wait(timeout=20)
    except subprocess.TimeoutExpired:
        locust.kill()
        locust.wait(timeout=10)
