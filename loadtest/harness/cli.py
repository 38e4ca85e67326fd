"""The reuseport CLI as a subprocess: the one way the benchmarks run it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtest.harness.errors import SetupError

STATE_DIR_ENV = "REUSEPORT_STATE_DIR"


class ReuseportCli:
    """``python -m reuseport`` (this interpreter, so this checkout's package) with its
    state in ``state_dir`` (``REUSEPORT_STATE_DIR``), each call in its own session so a
    Ctrl-C at the terminal does not interrupt the cleanup commands."""

    def __init__(self, state_dir: Path, extra_env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, STATE_DIR_ENV: str(state_dir), **(extra_env or {})}

    @staticmethod
    def argv(*args: str) -> list[str]:
        """The command line of ``reuseport ARGS`` (to run it under another command)."""
        return [sys.executable, "-m", "reuseport", *args]

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``reuseport ARGS`` (a foreground `up`, `top`, `logs -f`) without waiting."""
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or self.env,
            start_new_session=True,
        )

    def run(
        self, *args: str, timeout: float, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``reuseport ARGS``; with ``check``, a non-zero exit raises SetupError."""
        proc = subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=env or self.env,
            timeout=timeout,
            start_new_session=True,
        )
        if check and proc.returncode != 0:
            raise SetupError(
                f"`reuseport {' '.join(args)}` exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def ps(self, name: str) -> list[dict[str, Any]]:
        """``reuseport ps NAME --json``: one row per replica."""
        rows: list[dict[str, Any]] = json.loads(self.run("ps", name, "--json", timeout=60).stdout)
        return rows

    def restarts(self, name: str) -> int | None:
        """What ``ps`` counts as restarts of the service (a cross-check, not a figure)."""
        try:
            return sum(int(r.get("restarts") or 0) for r in self.ps(name))
        except (SetupError, subprocess.SubprocessError, ValueError):
            return None

    def down_quietly(self, name: str, timeout: float = 120) -> None:
        """``reuseport down NAME``; what it misses is found by the label sweep after it."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run("down", name, timeout=timeout, check=False)
