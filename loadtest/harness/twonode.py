"""A real two-node Docker Swarm on this one machine, for the Swarm tests and benchmark.

Node 1 is this machine's engine; node 2 a second dockerd in a network namespace of its own
(``rpn2``: a veth pair, 10.251.0.1 on this side, 10.251.0.2 inside) and a mount namespace
of its own, where its socket, pid file and exec-root sit at the default paths under a
private /run. So each node's engine answers at ``/run/docker.sock`` as seen by its own
containers, as on real separate machines: the node agent mounts that path on every node.
Node 2 shares this machine's pid namespace and filesystem otherwise (its pids are host
pids). Images are copied into it with `docker save | docker load`.

Everything is torn down whatever happens: both nodes leave the swarm, the second dockerd
stops (its mount namespace, and every mount in it, goes with it), the namespace and the
veth go, and so does the `docker_gwbridge` network the leave keeps on node 1. Traffic
goes only to loopback and the two addresses above.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

NETNS = "rpn2"
HOST_IF, NODE_IF = "rpv0", "rpv1"
NODE1_ADDR, NODE2_ADDR = "10.251.0.1", "10.251.0.2"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)


@dataclass
class TwoNodes:
    node1: docker.DockerClient
    node2: docker.DockerClient
    node2_socket: str
    node1_id: str
    node2_id: str

    def in_node2(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """A command in node 2's network namespace."""
        return _run("ip", "netns", "exec", NETNS, *argv)

    def listeners(self, port: int, node: int) -> list[int]:
        """Host pids of the processes listening on ``port`` in node ``node``'s kernel view."""
        argv = ("ss", "-Htlnp", f"sport = :{port}")
        shown = (self.in_node2(*argv) if node == 2 else _run(*argv)).stdout
        pids = []
        for line in shown.splitlines():
            if "pid=" in line:
                pids.append(int(line.split("pid=", 1)[1].split(",", 1)[0]))
        return pids


def _stale_teardown() -> None:
    """What a killed earlier run left: its namespace (the veth goes with it)."""
    if NETNS in _run("ip", "netns", "list", check=False).stdout.split():
        _run("ip", "netns", "pids", NETNS, check=False)
        _run("ip", "netns", "del", NETNS, check=False)
    _run("ip", "link", "del", HOST_IF, check=False)


def _wait_socket(path: Path, log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"node 2's dockerd exited: {log.read_text()[-2000:]}")
        if path.exists():
            client = docker.DockerClient(base_url=f"unix://{path}", timeout=10)
            try:
                client.ping()
                return
            except (docker.errors.DockerException, OSError):
                pass
            finally:
                client.close()
        time.sleep(0.2)
    raise RuntimeError(f"node 2's dockerd did not answer: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def two_node_swarm(node1: docker.DockerClient, images: list[str]) -> Iterator[TwoNodes]:
    if (node1.info().get("Swarm") or {}).get("LocalNodeState") != "inactive":
        raise RuntimeError("this engine is in a swarm already: the test needs it out of one")
    _stale_teardown()
    work = Path(tempfile.mkdtemp(prefix="reuseport-node2-"))
    run_dir, data_dir, log = work / "run", work / "data", work / "dockerd.log"
    run_dir.mkdir()
    data_dir.mkdir()
    process: subprocess.Popen[bytes] | None = None
    node2: docker.DockerClient | None = None
    swarm_made = False
    try:
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NODE_IF)
        _run("ip", "link", "set", NODE_IF, "netns", NETNS)
        _run("ip", "addr", "add", f"{NODE1_ADDR}/24", "dev", HOST_IF)
        _run("ip", "link", "set", HOST_IF, "up")
        for argv in (
            ("ip", "addr", "add", f"{NODE2_ADDR}/24", "dev", NODE_IF),
            ("ip", "link", "set", NODE_IF, "up"),
            ("ip", "link", "set", "lo", "up"),
        ):
            _run("ip", "netns", "exec", NETNS, *argv)
        # nsenter, not `ip netns exec` (which remounts /sys: "Devices cgroup isn't
        # mounted"); a private mount namespace with its own /run.
        dockerd = (
            f"mount --bind {run_dir} /run && exec dockerd --data-root {data_dir} "
            "--exec-root /run/docker --pidfile /run/docker.pid -H unix:///run/docker.sock "
            "--bridge=none --iptables=false --ip6tables=false"
        )
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{NETNS}",
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    dockerd,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        socket = run_dir / "docker.sock"
        _wait_socket(socket, log, process)
        node2 = docker.DockerClient(base_url=f"unix://{socket}", timeout=120)
        node1.swarm.init(advertise_addr=NODE1_ADDR, listen_addr=f"{NODE1_ADDR}:2377")
        swarm_made = True
        token = node1.swarm.attrs["JoinTokens"]["Worker"]
        node2.swarm.join(
            remote_addrs=[f"{NODE1_ADDR}:2377"],
            join_token=token,
            advertise_addr=NODE2_ADDR,
            listen_addr=f"{NODE2_ADDR}:2377",
        )
        saved = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        loaded = subprocess.run(
            ["docker", "-H", f"unix://{socket}", "load"],
            stdin=saved.stdout,
            capture_output=True,
            timeout=300,
        )
        saved.wait(timeout=60)
        if loaded.returncode != 0 or saved.returncode != 0:
            raise RuntimeError(f"copying images to node 2 failed: {loaded.stderr[-500:]!r}")
        node1_id = node1.info()["Swarm"]["NodeID"]
        node2_id = node2.info()["Swarm"]["NodeID"]
        yield TwoNodes(node1, node2, f"unix://{socket}", node1_id, node2_id)
    finally:
        if node2 is not None:
            with contextlib.suppress(docker.errors.DockerException):
                node2.swarm.leave(force=True)
            node2.close()
        if swarm_made:
            with contextlib.suppress(docker.errors.DockerException):
                node1.swarm.leave(force=True)
            with contextlib.suppress(docker.errors.DockerException):
                node1.networks.get("docker_gwbridge").remove()
        if process is not None:
            _stop(process, run_dir / "docker.pid")
        _run("ip", "netns", "del", NETNS, check=False)
        _run("ip", "link", "del", HOST_IF, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes], pid_file: Path) -> None:
    """Stop node 2's dockerd (SIGTERM, then SIGKILL) and whatever it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
