"""A small steady HTTP load for integration tests: new-connection and keep-alive clients
in threads, counting every failed request and which versions answered."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class Load:
    port: int
    host: str = "127.0.0.1"  # loopback, or an address of a namespace the test made
    new_connection_clients: int = 2
    keep_alive_clients: int = 2
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    last_versions: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for _ in range(self.new_connection_clients):
            self._threads.append(threading.Thread(target=self._run, args=(False,), daemon=True))
        for _ in range(self.keep_alive_clients):
            self._threads.append(threading.Thread(target=self._run, args=(True,), daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, keep_alive: bool) -> None:
        url = f"http://{self.host}:{self.port}/"
        limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)
        headers = {} if keep_alive else {"Connection": "close"}
        with httpx.Client(timeout=10, limits=limits, headers=headers) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(url)
                    outcome = (
                        None if response.status_code == 200 else f"HTTP {response.status_code}"
                    )
                    version = response.json().get("version", "?") if outcome is None else ""
                except (httpx.HTTPError, ValueError) as exc:  # ValueError: a body not JSON
                    outcome, version = f"{type(exc).__name__}: {exc}", ""
                with self._lock:
                    self.requests += 1
                    if outcome:
                        self.failures.append(outcome)
                    else:
                        self.versions[version] += 1
                        self.last_versions = (self.last_versions + [version])[-20:]
                time.sleep(0.002)
