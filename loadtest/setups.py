"""The setups the throughput benchmark compares, all running at once so runs can alternate.

* reuseport: N replicas on one port, started by the tool (``up -d --balance hash``: the
  kernel's 4-tuple hash, as before steering);
* steered: the same, with the tool's default ``--balance round-robin`` (an SK_REUSEPORT
  program picks each new connection's listener), a second service of the same bench;
* least-conn: the same with ``--balance least-conn`` (only for ``loadtest.slowmix``);
* manual: the same N replicas on one port, started by hand (``docker run``, host network);
* nginx / haproxy: Debian's proxy on the host in front of N replicas on N ports;
* limit: those N backends, each hit directly on its own port (no hop, perfect balance);
* single: one replica alone.

Containers are started by ``loadtest.harness``'s ``Bench`` (labelled, removed by label);
proxies run as our own foreground children with conf, pid and logs in a temp dir. All of
it is torn down in ``finally`` (exceptions, Ctrl-C, SIGTERM mapped to KeyboardInterrupt).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import docker
import httpx

from loadtest.harness.bench import Bench, BenchConfig, free_ports
from loadtest.harness.results import SETUP_ORDER
from loadtest.harness.signals import signals_held
from loadtest.shares import raise_fd_limit
from reuseport.kernel import sockets as kernel
from reuseport.projectfile import ServiceEntry

NAMES = SETUP_ORDER  # every setup, in the order they are started and shown
# The tool's setups: name -> its `up --balance` (hash: the kernel's; else eBPF steering).
BALANCES = {"reuseport": "hash", "steered": "round-robin", "least-conn": "least-conn"}
STARTABLE = (*NAMES, "least-conn")  # least-conn: for loadtest.slowmix, not a table row
BINARIES = {"wrk": "wrk", "nginx": "nginx", "haproxy": "haproxy"}
# Debian's packages ship a service that postinst would start (nginx on :80); its pidfile.
SERVICE_PIDFILES = {"nginx": Path("/run/nginx.pid"), "haproxy": Path("/run/haproxy.pid")}
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
READY_TIMEOUT_S = 60.0
FD_LIMIT = 16384  # 1024 client + 1024 upstream connections per proxy, with room to spare


class Setup(Protocol):
    name: str
    description: str
    port: int  # the single entry port, or the first backend port for "limit"
    service: str  # the tool's setups: the service name ("" for the others)

    def urls(self) -> list[str]: ...


@dataclass
class RunningSetup:
    name: str
    description: str
    port: int
    ports: list[int] = field(default_factory=list)  # several entry ports ("limit")
    service: str = ""  # the tool's setups: the service name

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/" for p in (self.ports or [self.port])]


# --------------------------------------------------------------------------- packages


def _which(binary: str) -> str | None:
    # A non-login root shell may lack the sbin dirs, where nginx and haproxy live.
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


@contextlib.contextmanager
def _services_held() -> Iterator[None]:
    """policy-rc.d saying 101 (action forbidden) while apt runs, so no postinst starts a
    service; a pre-existing policy-rc.d is put back byte for byte afterwards."""
    saved = POLICY_RC_D.read_bytes() if POLICY_RC_D.exists() else None
    before = POLICY_RC_D.stat() if saved is not None else None
    POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        if saved is None:
            POLICY_RC_D.unlink(missing_ok=True)
        else:
            POLICY_RC_D.write_bytes(saved)
            if before is not None:
                POLICY_RC_D.chmod(before.st_mode)
                os.utime(POLICY_RC_D, ns=(before.st_atime_ns, before.st_mtime_ns))


def _service_pid(name: str) -> int | None:
    """The pid of the package's system service if it runs (our own proxies never write
    the system pidfile: theirs lives in a temp dir)."""
    try:
        pid = int(SERVICE_PIDFILES[name].read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (KeyError, OSError, ValueError, IndexError):
        return None
    return pid if comm == name else None


def _stop_services(names: list[str]) -> None:
    """Double check: stop any service the install started anyway, then make sure it's gone."""
    for name in names:
        if _service_pid(name) is None:
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # no `service` here
            subprocess.run(["service", name, "stop"], capture_output=True, timeout=60)
        pid = _service_pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            time.sleep(1)
        if _service_pid(name) is not None:
            raise RuntimeError(f"the {name} system service runs and would not stop")
    for listener in kernel.listeners(80):  # the default site of Debian's nginx
        if listener.program in names:
            raise RuntimeError(f"{listener.program} still listens on :80 (pids {listener.pids})")


def ensure_packages(names: list[str]) -> None:
    """``apt-get install -y`` the Debian packages among ``names`` whose binary is missing,
    without letting their postinst start system services (nginx would take port 80)."""
    missing = [n for n in names if _which(BINARIES.get(n, n)) is None]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _services_held():
        # An index that is merely stale still installs; only the install's failure counts.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True, text=True
        )
    # Even after a failed install: a postinst that ran may have started its service.
    _stop_services([n for n in missing if n in SERVICE_PIDFILES])
    if done.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(missing)} failed: {done.stderr[-800:]}")
    still = [n for n in missing if _which(BINARIES.get(n, n)) is None]
    if still:
        raise RuntimeError(f"installed {', '.join(missing)} but {', '.join(still)} is missing")


# --------------------------------------------------------------------------- proxy configs


def nginx_conf(port: int, backends: list[int], tmp: Path) -> str:
    servers = "\n".join(f"    server 127.0.0.1:{b};" for b in backends)
    temp = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy"))
    more = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in ("fastcgi", "uwsgi", "scgi"))
    # keepalive_requests: nginx >= 1.19.10 closes a connection after 1000 requests (both
    # sides); the direct setups never reconnect, so nginx should not have to either.
    return f"""worker_processes auto;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {temp}
  {more}
  upstream app {{
{servers}
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def haproxy_cfg(port: int, backends: list[int]) -> str:
    servers = "\n".join(f"  server s{i} 127.0.0.1:{b}" for i, b in enumerate(backends, 1))
    return f"""global
  maxconn 4096
  nbthread {os.cpu_count() or 1}
defaults
  mode http
  maxconn 4096
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
"""


# --------------------------------------------------------------------------- running


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(what: str, ready: Callable[[], bool], alive: Callable[[], None] = lambda: None) -> None:
    """Until ``ready()``; ``alive()`` raises if what is awaited has died meanwhile."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {READY_TIMEOUT_S:g} s")
        time.sleep(0.05)


class _Proxies:
    """nginx and HAProxy as our own foreground children, conf, pid and logs in ``work``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def alive(self, name: str) -> None:
        process, log = self.running[name]
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise RuntimeError(f"{name} exited while starting:\n{tail}")

    def start(self, name: str, command: list[str]) -> None:
        log = self.work / name / "output.log"
        with open(log, "wb") as handle:
            # Own session: a terminal's Ctrl-C reaches us, and we stop the proxy in order.
            process = subprocess.Popen(
                command, stdout=handle, stderr=handle, start_new_session=True
            )
        self.running[name] = (process, log)

    def nginx(self, port: int, backends: list[int]) -> None:
        tmp = self.work / "nginx"
        tmp.mkdir()
        (tmp / "nginx.conf").write_text(nginx_conf(port, backends, tmp))
        directives = f"daemon off; pid {tmp}/nginx.pid;"
        self.start(
            "nginx",
            ["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")]
            + ["-g", directives],
        )

    def haproxy(self, port: int, backends: list[int]) -> None:
        tmp = self.work / "haproxy"
        tmp.mkdir()
        (tmp / "haproxy.cfg").write_text(haproxy_cfg(port, backends))
        self.start("haproxy", ["haproxy", "-db", "-f", str(tmp / "haproxy.cfg")])

    def stop_all(self) -> list[str]:
        """Stop every proxy; each is stopped even if an earlier one failed to."""
        problems: list[str] = []
        for name, (process, _log) in self.running.items():
            try:
                _stop_process(process)
            except Exception as exc:  # keep tearing down; reported at the end
                problems.append(f"stop {name}: {exc}")
        return problems


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (nginx and haproxy stop their workers), SIGKILL the whole group if stuck."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # orphaned workers, if any


def _close(bench: Bench, proxies: _Proxies) -> list[str]:
    """Remove everything; each step runs even if an earlier one failed."""
    problems = proxies.stop_all()
    try:
        problems += [f"left behind: {what}" for what in bench.cleanup()]
    except Exception as exc:  # keep tearing down; reported at the end
        problems.append(f"cleanup: {exc}")
    try:
        bench.client.close()
    except Exception as exc:
        problems.append(f"docker client: {exc}")
    return problems


def _start(
    bench: Bench,
    proxies: _Proxies,
    wanted: list[str],
    ports: Iterator[int],
    up_options: Sequence[str] = (),
) -> dict[str, Setup]:
    n = bench.replicas
    started: dict[str, Setup] = {}

    def listening(port: int, count: int) -> Callable[[], bool]:
        return lambda: len(kernel.listening_inodes(port)) >= count

    for name, balance in BALANCES.items():
        if name not in wanted:
            continue
        port = next(ports)
        service = bench.name if name == "reuseport" else tool_service(bench.name, name)
        # Returns once ps and the kernel show every replica listening.
        bench.start_reuseport(port, extra=["--balance", balance, *up_options], service=service)
        if balance != "hash":
            bench.wait_steered(service, balance)
        _wait(f"{name} replicas", listening(port, n))
        how = "the tool, up -f" if bench.config.project else "the tool"
        started[name] = RunningSetup(
            name, f"{n} replicas on one port ({how}, --balance {balance})", port, [], service
        )
    if "manual" in wanted:
        port = next(ports)
        for index in range(1, n + 1):
            bench.start_container(port, index)
        _wait("hand-started replicas", listening(port, n))
        started["manual"] = RunningSetup("manual", f"{n} replicas on one port (docker run)", port)
    backends: list[int] = []
    if any(name in wanted for name in ("nginx", "haproxy", "limit")):
        backends = [next(ports) for _ in range(n)]
        for index, backend in enumerate(backends, 1):
            bench.start_container(backend, index)
        for backend in backends:
            _wait(f"backend :{backend}", listening(backend, 1))
    for name, label in (("nginx", "nginx"), ("haproxy", "HAProxy")):
        if name in wanted:
            port = next(ports)
            getattr(proxies, name)(port, backends)
            alive = partial(proxies.alive, name)
            _wait(name, listening(port, 1), alive)
            _wait(name, partial(_http_ok, f"http://127.0.0.1:{port}/"), alive)
            started[name] = RunningSetup(name, f"{label} in front of {n} ports", port)
    if "limit" in wanted:
        started["limit"] = RunningSetup(
            "limit", f"each of {n} ports hit directly", backends[0], list(backends)
        )
    if "single" in wanted:
        port = next(ports)
        bench.start_container(port, 1)
        _wait("single replica", listening(port, 1))
        started["single"] = RunningSetup("single", "one replica alone", port)
    return {name: started[name] for name in wanted}


def tool_service(bench_name: str, setup: str) -> str:
    """A further tool setup's service name: the bench's, ``-<setup>`` before the ``-<pid>``."""
    prefix, _, pid = bench_name.rpartition("-")
    return f"{prefix}-{setup}-{pid}"


@contextlib.contextmanager
def running_setups(
    image: str,
    replicas: int,
    base_port: int,
    names: Iterable[str],
    up_options: Sequence[str] = (),
    project: ServiceEntry | None = None,
) -> Iterator[dict[str, Setup]]:
    """Start the requested setups (see module doc), yield them all running, remove them.
    ``up_options``: more options of the tool's ``up`` (e.g. ``--cpus``); ``project``: the
    user's service from a file, which the tool's setups are started from (``up -f``)."""
    requested = set(names)
    wanted = [n for n in STARTABLE if n in requested]
    unknown = requested - set(STARTABLE)
    if unknown:
        raise ValueError(f"unknown setup(s): {', '.join(sorted(unknown))}")
    raise_fd_limit(FD_LIMIT)  # inherited by wrk, nginx and haproxy
    singles = sum(n in wanted for n in (*BALANCES, "manual", "nginx", "haproxy", "single"))
    backends = replicas if {"nginx", "haproxy", "limit"} & set(wanted) else 0
    ports = iter(free_ports(base_port, singles + backends))
    work = Path(tempfile.mkdtemp(prefix="reuseport-throughput-"))
    config = BenchConfig(
        # The pid last: Bench.cleanup_stale() of a later run reads the owner from it.
        name=f"bench-tp-{secrets.token_hex(3)}-{os.getpid()}",
        state_dir=work / "state",
        image=image,
        replicas=replicas,
        first_port=base_port,
        ready_timeout_s=READY_TIMEOUT_S,
        project=project,
    )
    bench: Bench | None = None
    proxies = _Proxies(work)
    try:
        bench = Bench(config, docker.from_env(timeout=60), progress=lambda line: None)
        bench.check_images()  # fail early and clearly (no registry to pull from)
        yield _start(bench, proxies, wanted, ports, up_options)
    finally:
        with signals_held():
            problems = _close(bench, proxies) if bench is not None else proxies.stop_all()
            shutil.rmtree(work, ignore_errors=True)
        if problems:
            print("loadtest: teardown: " + "; ".join(problems), file=sys.stderr)
