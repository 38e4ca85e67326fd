"""Tests for demo_app/server.py, run as plain subprocesses (no Docker needed).

The server is what reuseport runs in every replica container, so these tests pin the
behaviour the supervisor relies on: SO_REUSEPORT sharing, the bind error of a broken app,
SIGTERM draining, and the per-replica health port with its SIGUSR1/SIGUSR2 switch.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SERVER = Path(__file__).resolve().parents[2] / "demo_app" / "server.py"
START_TIMEOUT = 15.0  # generous: CI machines can be slow to start Python
EXIT_TIMEOUT = 20.0


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it, we release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class Servers:
    """Starts server processes and guarantees they are all gone afterwards."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.output: dict[int, bytes] = {}  # pid -> stdout read so far

    def spawn(self, port: int, replica: str = "0", **env: str) -> subprocess.Popen[bytes]:
        full_env = {k: v for k, v in os.environ.items() if k not in ("HOST", "REUSEPORT")}
        full_env.update(PORT=str(port), REPLICA=replica, APP_VERSION="v-test", **env)
        proc = subprocess.Popen(
            [sys.executable, str(SERVER)],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,  # raw pipes: we read stdout with select() and os.read()
        )
        self.procs.append(proc)
        self.output[proc.pid] = b""
        return proc

    def start(self, port: int, replica: str = "0", **env: str) -> subprocess.Popen[bytes]:
        """Spawn and wait for the start-up line, i.e. until the port is listening."""
        proc = self.spawn(port, replica, **env)
        self.wait_output(proc, "listening on", START_TIMEOUT)
        return proc

    def wait_output(self, proc: subprocess.Popen[bytes], text: str, timeout: float) -> str:
        """Read the process's stdout until `text` shows up; fail if it exits first."""
        assert proc.stdout is not None
        needle = text.encode()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while needle not in self.output[proc.pid]:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"timeout waiting for {text!r}: {self.output[proc.pid]!r}")
                if not sel.select(left):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:  # EOF: the process exited without printing it
                    proc.wait(timeout=5)
                    err = proc.stderr.read() if proc.stderr else b""
                    pytest.fail(
                        f"server exited ({proc.returncode}) before {text!r}: "
                        f"stdout={self.output[proc.pid]!r} stderr={err!r}"
                    )
                self.output[proc.pid] += chunk
        return self.output[proc.pid].decode()

    def stdout(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything the (exited) process printed."""
        assert proc.stdout is not None
        rest = proc.stdout.read() or b""
        self.output[proc.pid] += rest
        return self.output[proc.pid].decode()

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            finally:
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def health_port(port: int) -> int:
    # The kernel may hand out a just-released port again: insist on a different one.
    while (candidate := free_port()) == port:
        pass
    return candidate


def raw_request(port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        return read_to_eof(sock)


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_routes(servers: Servers, port: int) -> None:
    proc = servers.start(port, replica="r1")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        r = client.get("/")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-replica"] == "r1"
        assert r.json() == {"replica": "r1", "pid": proc.pid, "version": "v-test"}

        head = client.head("/")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == r.headers["content-length"]

        health = client.get("/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")

        assert client.get("/nope").status_code == 404
        assert client.post("/").status_code == 405

        slept = client.get("/sleep", params={"s": "0.1"})
        assert slept.status_code == 200
        assert slept.json()["replica"] == "r1"
        assert client.get("/sleep", params={"s": "abc"}).status_code == 400


def test_start_line(servers: Servers, port: int) -> None:
    proc = servers.start(port, replica="7")
    out = servers.wait_output(proc, "listening on", 1)
    assert f"replica 7 listening on 0.0.0.0:{port} pid {proc.pid} version v-test" in out


def test_keepalive_stays_on_one_connection(servers: Servers, port: int) -> None:
    servers.start(port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        responses = [client.get("/") for _ in range(100)]
    assert {r.status_code for r in responses} == {200}
    assert {r.headers["connection"] for r in responses} == {"keep-alive"}
    # One connection means one accept, so every answer comes from the same process.
    assert len({r.json()["pid"] for r in responses}) == 1


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
    ids=["http10", "connection-close"],
)
def test_close_requests(servers: Servers, port: int, request_bytes: bytes) -> None:
    servers.start(port)
    # read_to_eof returns only because the server closes after its answer.
    data = raw_request(port, request_bytes)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in data
    assert data.count(b"HTTP/1.1 ") == 1


def test_several_requests_in_one_chunk(servers: Servers, port: int) -> None:
    servers.start(port)
    payload = (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        # A body must be skipped, not parsed as the next request.
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /"
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    data = raw_request(port, payload)
    # Bodies are not newline-terminated, so a status line may follow a body directly.
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"200", b"404"]
    assert data.endswith(b"not found\n")


def test_request_split_across_chunks(servers: Servers, port: int) -> None:
    servers.start(port)
    payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # NODELAY plus pauses make the pieces arrive as separate reads on the server.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (payload[:5], payload[5:30], payload[30:-1], payload[-1:]):
            sock.sendall(piece)
            time.sleep(0.05)
        data = read_to_eof(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nok\n")


def test_two_replicas_share_the_port(servers: Servers, port: int) -> None:
    a = servers.start(port, replica="a")
    b = servers.start(port, replica="b")
    assert a.poll() is None and b.poll() is None

    seen: Counter[str] = Counter()
    pids: dict[str, int] = {}
    for _ in range(200):
        # A new connection per request: the kernel balances connections, not requests.
        r = httpx.get(f"http://127.0.0.1:{port}/", headers={"Connection": "close"}, timeout=10)
        assert r.status_code == 200
        seen[r.headers["x-replica"]] += 1
        pids[r.json()["replica"]] = r.json()["pid"]
    assert set(seen) == {"a", "b"}, seen
    assert pids == {"a": a.pid, "b": b.pid}


def test_without_reuseport_second_replica_fails(servers: Servers, port: int) -> None:
    first = servers.start(port, replica="a", REUSEPORT="0")
    second = servers.spawn(port, replica="b", REUSEPORT="0")
    _, err = second.communicate(timeout=START_TIMEOUT)
    assert second.returncode != 0
    assert "Address already in use" in err.decode()
    # The first one is unaffected.
    assert first.poll() is None
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).headers["x-replica"] == "a"


def assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_sigterm_drains_inflight_request(servers: Servers, port: int) -> None:
    proc = servers.start(port, DRAIN_TIMEOUT="30")
    result: dict[str, httpx.Response | BaseException] = {}

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        # Open the connection first, so the slow request cannot sit in the accept
        # queue (which a closing listener resets) when SIGTERM arrives.
        assert client.get("/healthz").status_code == 200

        def slow() -> None:
            try:
                result["response"] = client.get("/sleep", params={"s": "2"})
            except BaseException as exc:  # reported by the main thread
                result["response"] = exc

        thread = threading.Thread(target=slow, daemon=True)
        thread.start()
        time.sleep(0.5)  # let the request reach the server
        proc.send_signal(signal.SIGTERM)
        servers.wait_output(proc, "draining", 10)

        # The listener is closed while the request is still in flight.
        assert proc.poll() is None
        assert_refused(port)

        thread.join(timeout=30)
        response = result.get("response")
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200
        assert response.json()["pid"] == proc.pid
        # A keep-alive connection is told to go away once the server drains.
        assert response.headers["connection"] == "close"

    assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    assert "all connections closed" in servers.stdout(proc)
    assert_refused(port)


def test_sigterm_closes_idle_keepalive(servers: Servers, port: int) -> None:
    # A drain timeout far above the wait below: exiting in time proves the idle
    # connection was closed rather than waited for.
    proc = servers.start(port, DRAIN_TIMEOUT="120")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert client.get("/").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    assert "all connections closed" in servers.stdout(proc)


def test_sigint_also_drains(servers: Servers, port: int) -> None:
    proc = servers.start(port)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=EXIT_TIMEOUT) == 0


def test_drain_timeout_ends_a_stuck_request(servers: Servers, port: int) -> None:
    proc = servers.start(port, DRAIN_TIMEOUT="1")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sock.sendall(b"GET /sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)  # let the request reach the server
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
        # The stuck request got no answer: the connection was dropped.
        with contextlib.suppress(ConnectionResetError):
            assert read_to_eof(sock) == b""
    assert "dropped at timeout" in servers.stdout(proc)


def test_health_port_serves_only_healthz(servers: Servers, port: int, health_port: int) -> None:
    proc = servers.start(port, replica="h", HEALTH_PORT=str(health_port))
    out = servers.wait_output(proc, "listening on", 1)
    assert f"listening on 0.0.0.0:{port} pid {proc.pid}" in out
    assert f"health on 0.0.0.0:{health_port}" in out
    with httpx.Client(base_url=f"http://127.0.0.1:{health_port}", timeout=10) as client:
        r = client.get("/healthz")
        assert (r.status_code, r.text) == (200, "ok\n")
        assert r.headers["x-replica"] == "h"
        # The health port is not a second way into the app.
        assert client.get("/").status_code == 404
        assert client.get("/sleep", params={"s": "0"}).status_code == 404
        assert client.get("/nope").status_code == 404
    # The main port is unchanged.
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).json()["pid"] == proc.pid


def test_unhealthy_switch(servers: Servers, port: int, health_port: int) -> None:
    proc = servers.start(port, HEALTH_PORT=str(health_port))
    main = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    health = httpx.Client(base_url=f"http://127.0.0.1:{health_port}", timeout=10)
    with main, health:
        # Keep-alive connections opened while healthy: the switch is per process, so
        # they must see it too.
        assert main.get("/healthz").status_code == 200
        assert health.get("/healthz").status_code == 200

        proc.send_signal(signal.SIGUSR1)
        servers.wait_output(proc, "unhealthy on SIGUSR1", 10)
        for client in (main, health):
            r = client.get("/healthz")
            assert (r.status_code, r.text) == (503, "unhealthy\n")
        # Everything else on the main port keeps serving: the replica must be replaced
        # before it is stopped, without failed requests.
        assert main.get("/").status_code == 200
        assert main.get("/sleep", params={"s": "0"}).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 503

        # A repeated signal changes nothing and says so.
        proc.send_signal(signal.SIGUSR1)
        servers.wait_output(proc, "already unhealthy (SIGUSR1)", 10)
        assert health.get("/healthz").status_code == 503

        proc.send_signal(signal.SIGUSR2)
        servers.wait_output(proc, "healthy on SIGUSR2", 10)
        for client in (main, health):
            r = client.get("/healthz")
            assert (r.status_code, r.text) == (200, "ok\n")
    assert proc.poll() is None


def test_unhealthy_switch_without_health_port(servers: Servers, port: int) -> None:
    proc = servers.start(port)
    proc.send_signal(signal.SIGUSR1)
    servers.wait_output(proc, "unhealthy on SIGUSR1", 10)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert client.get("/healthz").status_code == 503
        assert client.get("/").status_code == 200


def assert_one_line_error(proc: subprocess.Popen[bytes], *needles: str) -> str:
    out, err = proc.communicate(timeout=START_TIMEOUT)
    assert proc.returncode not in (None, 0)
    text = err.decode()
    assert text.count("\n") == 1 and text.endswith("\n"), text
    for needle in needles:
        assert needle in text
    # It never claimed to be up.
    assert b"listening on" not in out
    return text


def test_health_port_taken_by_sibling(servers: Servers, port: int, health_port: int) -> None:
    # Two replicas given the same health port: the main port is shared (SO_REUSEPORT)
    # but the health port must not be, or checks would hit either replica at random.
    first = servers.start(port, replica="a", HEALTH_PORT=str(health_port))
    second = servers.spawn(port, replica="b", HEALTH_PORT=str(health_port))
    text = assert_one_line_error(second, f"health port 0.0.0.0:{health_port}", "in use")
    assert text.startswith("replica b: ")
    assert second.returncode == 1
    assert first.poll() is None
    r = httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=10)
    assert r.headers["x-replica"] == "a"


def test_health_port_taken_by_other_socket(servers: Servers, port: int, health_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("0.0.0.0", health_port))
        other.listen()
        proc = servers.spawn(port, HEALTH_PORT=str(health_port))
        assert_one_line_error(proc, str(health_port), "Address already in use")


@pytest.mark.parametrize("value", ["abc", "0", "-1", "65536", "80.5", "same"])
def test_invalid_health_port(servers: Servers, port: int, value: str) -> None:
    proc = servers.spawn(port, HEALTH_PORT=str(port) if value == "same" else value)
    text = assert_one_line_error(proc, "HEALTH_PORT")
    assert proc.returncode == 2
    assert "Traceback" not in text


def test_sigterm_closes_both_listeners(servers: Servers, port: int, health_port: int) -> None:
    # A long idle grace keeps the process in its drain while we look at the ports.
    proc = servers.start(
        port, HEALTH_PORT=str(health_port), DRAIN_TIMEOUT="60", DRAIN_IDLE_GRACE="60"
    )
    with socket.create_connection(("127.0.0.1", health_port), timeout=10) as sock:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: keep-alive" in first

        proc.send_signal(signal.SIGTERM)
        servers.wait_output(proc, "draining", 10)
        # The log line comes after both listeners are closed.
        assert_refused(port)
        assert_refused(health_port)
        assert proc.poll() is None  # still draining: our connection is open

        # The open health connection is drained like any other: one more answer, then
        # "Connection: close", and the process can exit.
        sock.sendall(request)
        last = read_to_eof(sock)
        assert last.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: close" in last
    assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    assert "all connections closed" in servers.stdout(proc)
    assert_refused(health_port)
