"""Locust users that record which replica answered (the demo app's ``X-Replica`` header).

Run ONLY as a subprocess (importing locust monkey-patches the process with gevent)::

    .venv/bin/locust -f loadtest/locustfile.py --headless -u 40 -r 40 \\
        --host http://127.0.0.1:PORT --csv OUT/chaos KeepAliveUser NewConnectionUser

Two client kinds, because SO_REUSEPORT balances *connections*, not requests:

* ``KeepAliveUser``: one persistent HTTP/1.1 connection per user, like a real client; all
  its requests stay on the replica the kernel picked when it connected.
* ``NewConnectionUser``: sends ``Connection: close``, so the server ends every connection
  after its response and each request is a new TCP connection: the kernel's per-connection
  spread.

Environment:

* ``LOCUST_REPLICA_FILE``: at test stop, write JSON here: ``shares`` (user class -> replica
  -> responses), ``failures_by_error``, and, for the chaos scenario, every failure with its
  wall-clock time (``failures``), successes/failures per wall-clock second (``per_second``)
  and when all users were running (``started_at``).
* ``LOCUST_READY_FILE``: written (with the time) once every user is spawned, so a caller
  knows when the load is on.
* ``LOCUST_USER_RPS``: requests per second per user (default 20). A constant rate keeps
  the load steady and well below what 2 cores can serve, so dips in throughput show
  failures, not saturation.
* ``LOCUST_NETWORK_TIMEOUT``: seconds a request may wait for its connection and for its
  answer (FastHttpUser's ``network_timeout`` and ``connection_timeout``; unset: locust's
  default, 60 s). The hang scenario uses 5 s: a request stuck on a stopped replica must
  fail inside the run instead of outliving it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter, defaultdict
from typing import Any

import geventhttpclient.client
from locust import FastHttpUser, constant_throughput, events, task

USER_RPS = float(os.environ.get("LOCUST_USER_RPS", "20"))


def _network_timeout() -> float | None:
    """LOCUST_NETWORK_TIMEOUT in seconds; None keeps FastHttpUser's defaults, so the other
    scenarios run exactly as before."""
    text = os.environ.get("LOCUST_NETWORK_TIMEOUT", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"LOCUST_NETWORK_TIMEOUT must be a number of seconds > 0, not {text!r}")
    return value


NETWORK_TIMEOUT_S = _network_timeout()
# Enough for any sane chaos run; a run where everything fails must not eat all memory.
MAX_FAILURES_KEPT = 50_000

shares: dict[str, Counter[str]] = defaultdict(Counter)
failures_by_error: Counter[str] = Counter()
# Successful responses that took longer than SLOW_MS, by user class: a request that sat in
# a hung replica's accept queue and was answered after it moved to a live one.
SLOW_MS = 1000.0
slow: Counter[str] = Counter()
failures: list[dict[str, Any]] = []
per_second: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # second -> [ok, failed]
started_at: float | None = None


def _no_silent_retry(method: str) -> bool:
    return False


# geventhttpclient (under FastHttpUser) silently re-sends an idempotent request when its
# connection breaks (RFC 9110 9.2.2 allows it), whatever locust's max_retries says. That
# would hide exactly the requests a killed replica drops, so every failure is counted as
# seen on the wire. (Browsers and Go's net/http retry such requests, curl does not.)
if hasattr(geventhttpclient.client, "_may_retry_after_send_error"):
    geventhttpclient.client._may_retry_after_send_error = _no_silent_retry
else:
    raise RuntimeError("geventhttpclient changed: cannot switch off its silent retries")


class _ReplicaUser(FastHttpUser):
    abstract = True
    wait_time = constant_throughput(USER_RPS)
    # FastHttpUser's default is no retry; stated so nobody "fixes" failures by retrying.
    max_retries = 0
    headers: dict[str, str] = {}
    # Replica that answered this user's previous request, for KeepAliveUser the replica its
    # open connection is on: tells a failure on a killed replica's connection from others.
    connection_replica: str | None = None
    if NETWORK_TIMEOUT_S is not None:
        network_timeout = NETWORK_TIMEOUT_S
        connection_timeout = NETWORK_TIMEOUT_S

    def context(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "connection_replica": self.connection_replica}

    @task
    def get_root(self) -> None:
        response = self.client.get("/", headers=self.headers, name=type(self).__name__)
        replica = response.headers.get("X-Replica") if response.headers else None
        # No answer (a broken connection) leaves None: the client then drops the socket and
        # the next request opens a new one, on a replica not known yet.
        self.connection_replica = replica if isinstance(replica, str) else None


class KeepAliveUser(_ReplicaUser):
    """One persistent connection per user: stays on one replica until it breaks."""


class NewConnectionUser(_ReplicaUser):
    """A new TCP connection per request (the server closes after each response)."""

    headers = {"Connection": "close"}

    def context(self) -> dict[str, Any]:
        # Every request has its own connection: no replica is known before it is answered.
        return {"kind": type(self).__name__, "connection_replica": None}


def _error_key(exc: BaseException | str) -> str:
    # Like locust's own failure table: object addresses would make every error unique.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(exc))


@events.request.add_listener
def _on_request(
    context: dict[str, Any] | None = None,
    response: Any = None,
    exception: BaseException | None = None,
    start_time: float | None = None,
    response_time: float | None = None,
    **_: Any,
) -> None:
    now = time.time()
    kind = (context or {}).get("kind", "?")
    headers = getattr(response, "headers", None)
    replica = headers.get("X-Replica") if headers else None
    if exception is None:
        shares[kind][replica or "?"] += 1
        per_second[int(now)][0] += 1
        if response_time is not None and response_time > SLOW_MS:
            slow[kind] += 1
        return
    per_second[int(now)][1] += 1
    error = _error_key(exception)
    failures_by_error[error] += 1
    if len(failures) < MAX_FAILURES_KEPT:
        failures.append(
            {
                "t": now,
                "start": start_time,  # before a kill: in flight; after: sent to a dead peer
                "kind": kind,
                "error": error,
                # An HTTP error response names its replica; a dead connection cannot.
                "replica": replica or (context or {}).get("connection_replica"),
            }
        )


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_: Any) -> None:
    global started_at
    if started_at is not None:
        return
    started_at = time.time()
    path = os.environ.get("LOCUST_READY_FILE")
    if path:
        _write_json(path, {"started_at": started_at, "users": user_count})


def _write_json(path: str, data: dict[str, Any]) -> None:
    # Atomic: the caller may read the file the moment it appears.
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _write_results(**_: Any) -> None:
    path = os.environ.get("LOCUST_REPLICA_FILE")
    if not path:
        return
    _write_json(
        path,
        {
            "shares": {kind: dict(counts) for kind, counts in shares.items()},
            "failures_by_error": dict(failures_by_error),
            "slow_over_1s": dict(slow),
            "failures": failures,
            "failures_dropped": max(0, sum(failures_by_error.values()) - len(failures)),
            "per_second": {str(s): counts for s, counts in sorted(per_second.items())},
            "started_at": started_at,
            "user_rps": USER_RPS,
        },
    )


# test_stop fires when the run time is over or on a signal; quitting once more on exit, so
# requests that finished in between are not lost (the file is simply rewritten).
events.test_stop.add_listener(_write_results)
events.quitting.add_listener(_write_results)
