"""One supervisor per service: two `up` at the same moment, and a second foreground `up`.

What the code does (service.start + store.acquire_lease): two `up -d` started together race
for the service's lease; the winner brings the replicas up and hands over to its supervisor
container, the loser fails at once (it waits out a probe for 0.2 s, not the winner's whole
bring-up) with exit 6 and one line naming the holder, `already supervised by `reuseport up`
(pid N)`. It never creates a replica or a supervisor of its own.
"""

from __future__ import annotations

import subprocess

from tests.integration.conftest import Service, assert_one_line_error, terminate, wait_for


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_two_detached_ups_at_once_make_one_service(service: Service) -> None:
    args = service.up_args("--detach", replicas=3)
    first, second = service.popen(*args), service.popen(*args)
    results = {p.pid: finished(p) for p in (first, second)}

    codes = sorted(r.returncode for r in results.values())
    assert codes == [0, 6], {pid: (r.returncode, r.stderr) for pid, r in results.items()}
    ((winner, _),) = [(pid, r) for pid, r in results.items() if r.returncode == 0]
    (loser,) = [r for r in results.values() if r.returncode == 6]
    assert_one_line_error(loser, "already supervised by", f"`reuseport up` (pid {winner})")

    assert len(service.containers()) == 3  # every replica container, running or not
    supervisors = service.containers(role="supervisor")
    assert len(supervisors) == 1 and supervisors[0].status == "running"
    rows = service.ps()
    assert sorted(r["replica"] for r in rows if r["ready"]) == [1, 2, 3]
    assert len(rows) == 3


def test_second_foreground_up_is_refused_naming_the_holder(service: Service) -> None:
    holder = service.popen(*service.up_args(replicas=2))
    try:
        wait_for(lambda: len(service.listening()) == 2, timeout=60, what="2 listening")
        before = service.replica_ids()
        for extra in ((), ("--detach",)):
            result = service.cli(*service.up_args(*extra, replicas=2))
            assert result.returncode == 6, result.stderr
            assert_one_line_error(result, "already supervised by", f"pid {holder.pid}")
        assert service.replica_ids() == before  # the refused `up`s touched nothing
        assert service.containers(role="supervisor") == []
        assert holder.poll() is None  # ...and the holder still supervises
    finally:
        _, err = terminate(holder)
    assert "stopped and removed 2 replicas" in err
