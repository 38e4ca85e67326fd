"""The setups the throughput benchmark compares, all started at once so runs alternate.

* reuseport: N replicas on one port, started by the tool (`up -d`);
* manual: the same N replicas on one port, started by hand with the Docker SDK;
* nginx / haproxy: Debian's proxy on the host in front of N replicas on N ports;
* limit: the same N backends, each hit directly on its own port (no hop, perfect balance);
* single: one replica alone.

Everything is labelled (``io.reuseport.bench.run``) and removed in ``finally``; proxies run
as our own foreground children with their files in a temp dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx

from benchmarks import replace_latency as rl
from reuseport import kernel

RUN_LABEL = "io.reuseport.bench.run"
BINARIES = {"wrk": "wrk", "nginx": "nginx", "haproxy": "haproxy"}
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
READY_TIMEOUT_S = 60.0


@dataclass
class Setup:
    name: str
    description: str
    port: int
    urls: list[str] = field(default_factory=list)


def ensure_packages(names: list[str]) -> None:
    """Install Debian packages whose binaries are missing, without starting their services
    (a policy-rc.d that says 101 keeps postinst from launching nginx/haproxy on port 80)."""
    missing = [n for n in names if shutil.which(BINARIES.get(n, n)) is None]
    if not missing:
        return
    saved = POLICY_RC_D.read_bytes() if POLICY_RC_D.exists() else None
    POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(missing)} failed: {done.stderr[-500:]}")
    finally:
        if saved is None:
            POLICY_RC_D.unlink(missing_ok=True)
        else:
            POLICY_RC_D.write_bytes(saved)


def _wait(what: str, ready: callable) -> None:  # type: ignore[valid-type]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not get ready within {READY_TIMEOUT_S:g} s")
        time.sleep(0.05)


def _listeners(port: int) -> int:
    return len(kernel.listening_inodes(port))


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class _Bench:
    def __init__(self, image: str, replicas: int, work: Path) -> None:
        self.image, self.replicas, self.work = image, replicas, work
        self.run_id = f"tp-{os.getpid()}"
        self.tool_name = f"bench-tp-{os.getpid()}"
        self.client = docker.from_env(timeout=60)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.tool_started = False

    def container(self, port: int, replica: int) -> None:
        api = self.client.api
        created = api.create_container(
            self.image,
            environment={"PORT": str(port), "REPLICA": str(replica)},
            labels={"io.reuseport.bench": "1", RUN_LABEL: self.run_id},
            host_config=api.create_host_config(network_mode="host", init=True),
        )
        api.start(created["Id"])

    def tool(self, port: int) -> None:
        env = {**os.environ, "REUSEPORT_STATE_DIR": str(self.work / "state")}
        self.tool_started = True
        subprocess.run(
            [
                sys.executable,
                "-m",
                "reuseport",
                "up",
                self.image,
                "-n",
                str(self.replicas),
                "-p",
                str(port),
                "--name",
                self.tool_name,
                "-d",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def nginx(self, port: int, backends: list[int]) -> None:
        tmp = self.work / "nginx"
        tmp.mkdir()
        servers = "\n".join(f"    server 127.0.0.1:{b};" for b in backends)
        (tmp / "nginx.conf").write_text(f"""
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream app {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=1024;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
        self._spawn(
            [
                "nginx",
                "-e",
                str(tmp / "error.log"),
                "-p",
                str(tmp),
                "-c",
                str(tmp / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            tmp / "stderr.log",
        )

    def haproxy(self, port: int, backends: list[int]) -> None:
        tmp = self.work / "haproxy"
        tmp.mkdir()
        servers = "\n".join(f"  server s{i} 127.0.0.1:{b}" for i, b in enumerate(backends, 1))
        (tmp / "haproxy.cfg").write_text(f"""
global
  # 2 x 1024 client + server connections fit; more would need a higher fd limit
  maxconn 4096
  nbthread {os.cpu_count() or 1}
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  balance roundrobin
{servers}
""")
        self._spawn(["haproxy", "-db", "-f", str(tmp / "haproxy.cfg")], tmp / "stderr.log")

    def _spawn(self, command: list[str], log: Path) -> None:
        with open(log, "wb") as handle:
            self.processes.append(
                subprocess.Popen(command, stdout=handle, stderr=handle, start_new_session=True)
            )

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.tool_started:
            env = {**os.environ, "REUSEPORT_STATE_DIR": str(self.work / "state")}
            subprocess.run(
                [sys.executable, "-m", "reuseport", "down", self.tool_name],
                env=env,
                capture_output=True,
                timeout=120,
            )
        for container in self.client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"}
        ):
            container.remove(force=True)
        self.client.close()


@contextlib.contextmanager
def running_setups(
    image: str, replicas: int, base_port: int, names: Iterable[str]
) -> Iterator[dict[str, Setup]]:
    wanted = list(names)
    needs_backends = any(n in wanted for n in ("nginx", "haproxy", "limit"))
    count = 5 + (replicas if needs_backends else 0)  # one port per single-port setup
    ports = iter(rl.free_ports(base_port, count))
    work = Path(tempfile.mkdtemp(prefix="reuseport-throughput-"))
    bench = _Bench(image, replicas, work)
    setups: dict[str, Setup] = {}
    try:
        if "reuseport" in wanted:
            port = next(ports)
            bench.tool(port)  # returns once the kernel shows every replica listening
            setups["reuseport"] = Setup(
                "reuseport", f"{replicas} replicas on one port (the tool)", port
            )
        if "manual" in wanted:
            port = next(ports)
            for index in range(1, replicas + 1):
                bench.container(port, index)
            _wait("hand-started replicas", lambda: _listeners(port) == replicas)  # noqa: B023
            setups["manual"] = Setup(
                "manual", f"{replicas} replicas on one port (docker run)", port
            )
        backends = [next(ports) for _ in range(replicas)] if needs_backends else []
        for index, backend in enumerate(backends, 1):
            bench.container(backend, index)
        for backend in backends:
            _wait(f"backend :{backend}", lambda b=backend: _listeners(b) == 1)  # type: ignore[misc]
        if "nginx" in wanted:
            port = next(ports)
            bench.nginx(port, backends)
            _wait("nginx", lambda: _http_ok(f"http://127.0.0.1:{port}/"))  # noqa: B023
            setups["nginx"] = Setup("nginx", f"nginx in front of {replicas} ports", port)
        if "haproxy" in wanted:
            port = next(ports)
            bench.haproxy(port, backends)
            _wait("haproxy", lambda: _http_ok(f"http://127.0.0.1:{port}/"))  # noqa: B023
            setups["haproxy"] = Setup("haproxy", f"HAProxy in front of {replicas} ports", port)
        if "limit" in wanted:
            setups["limit"] = Setup(
                "limit",
                f"each of {replicas} ports hit directly",
                backends[0],
                [f"http://127.0.0.1:{b}/" for b in backends],
            )
        if "single" in wanted:
            port = next(ports)
            bench.container(port, 1)
            _wait("single replica", lambda: _listeners(port) == 1)  # noqa: B023
            setups["single"] = Setup("single", "one replica alone", port)
        for setup in setups.values():
            if not setup.urls:
                setup.urls = [f"http://127.0.0.1:{setup.port}/"]
        yield setups
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
