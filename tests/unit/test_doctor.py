"""`reuseport doctor`: findings and the exit decision on replayed hosts (no Docker needed)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from reuseport import cli, doctor
from reuseport.doctor import Finding
from reuseport.engine.base import Replica
from reuseport.errors import EngineUnavailable
from reuseport.kernel import options
from reuseport.kernel.sockets import Listener

PORT = 8080
OURS = "a" * 64
STRANGER_CONTAINER = "b" * 64


@dataclass
class Engine:
    """Just what doctor asks of an engine."""

    replica_list: list[Replica] = field(default_factory=list)

    def version(self) -> dict[str, str]:
        return {"version": "20.10.24", "api_version": "1.41", "address": "unix:///x.sock"}

    def replicas(self, service: str | None = None) -> list[Replica]:
        return self.replica_list


def replica(cid: str = OURS, service: str = "web", index: int = 1, pid: int = 11) -> Replica:
    """A running replica whose process tree is its own pid alone (see run_list)."""
    return Replica(cid, f"{service}.{index}", service, index, "running", pid, "img", "", "", 0, 0)


def listener(
    pid: int | None = 100,
    uid: int = 0,
    container: str | None = None,
    address: str = "0.0.0.0",
    inode: int = 1,
) -> Listener:
    pids = (pid,) if pid else ()
    program = "python3" if pid else None
    return Listener(inode, address, PORT, "ipv4", uid, 0, pids, program, container)


def down() -> Engine:
    raise EngineUnavailable(
        "no Docker engine answers at unix:///x.sock: start one with `scripts/ensure-docker`"
    )


def run_list(
    port: int | None = PORT,
    *,
    engine: Callable[[], object] = Engine,
    migrate: int | None = 1,
    somaxconn: int | None = 4096,
    found: list[Listener] | None = None,
    reuseport: bool | None = True,
    euid: int = 0,
    release: str = "6.1.0-18-amd64",
    steering: str | None = None,
) -> list[Finding]:
    sysctls = {"net.ipv4.tcp_migrate_req": migrate, "net.core.somaxconn": somaxconn}
    return doctor.diagnose(
        port,
        connect=engine,  # type: ignore[arg-type]
        sysctl=sysctls.get,
        listeners=lambda p: list(found or []),
        reuseport=lambda listener: reuseport,
        process_tree=lambda pid: [pid],
        euid=euid,
        release=release,
        steering=lambda: steering,
    )


def run(port: int | None = PORT, **host: Any) -> dict[str, Finding]:
    """One finding per check (the hosts with several on one check use run_list)."""
    findings = run_list(port, **host)
    checks = [f.check for f in findings]
    assert len(set(checks)) == len(checks), checks
    return {f.check: f for f in findings}


def statuses(findings: dict[str, Finding]) -> dict[str, str]:
    return {check: f.status for check, f in findings.items()}


def test_healthy_host_is_all_ok_and_does_not_block() -> None:
    findings = run()
    assert statuses(findings) == {
        "engine": "ok",
        "kernel": "ok",
        "tcp_migrate_req": "ok",
        "somaxconn": "ok",
        "steering": "ok",
        "port": "ok",
        "uids": "ok",
    }
    assert findings["engine"].detail == "Docker 20.10.24 (API 1.41) at unix:///x.sock"
    assert findings["port"].detail == "port 8080 is free"
    assert not doctor.blocking(list(findings.values()))


def test_without_a_port_there_is_no_port_finding() -> None:
    assert "port" not in run(None)


def test_migrate_req_off_warns_with_the_sysctl_fix_but_does_not_block() -> None:
    findings = run(migrate=0)
    assert findings["tcp_migrate_req"].status == "warn"
    assert findings["tcp_migrate_req"].fix == "sysctl -w net.ipv4.tcp_migrate_req=1"
    assert not doctor.blocking(list(findings.values()))


def test_old_kernels() -> None:
    assert run(release="5.10.0", migrate=None)["tcp_migrate_req"].status == "warn"
    ancient = run(release="3.2.0-4-amd64")
    assert ancient["kernel"].status == "fail"
    assert doctor.blocking(list(ancient.values()))


def test_small_somaxconn_warns() -> None:
    finding = run(somaxconn=128)["somaxconn"]
    assert finding.status == "warn" and finding.fix == "sysctl -w net.core.somaxconn=4096"


@pytest.mark.parametrize(
    ("has_reuseport", "fragment"),
    [
        (True, "with SO_REUSEPORT, which is not a replica of ours"),
        (False, "which is not in a SO_REUSEPORT group"),
        (None, "which is not a replica of ours"),
    ],
)
def test_foreign_listener_blocks_and_names_its_pid(
    has_reuseport: bool | None, fragment: str
) -> None:
    findings = run(found=[listener(pid=321, uid=1000)], reuseport=has_reuseport)
    port = findings["port"]
    assert port.status == "fail"
    assert "pid 321 (python3) on 0.0.0.0 as uid 1000" in port.detail and fragment in port.detail
    assert port.fix == "kill 321 (or choose another --port)"
    assert findings["uids"].status == "ok"  # no replica of ours it could join
    assert "pid 321 (python3) on 0.0.0.0 as uid 1000" in findings["uids"].detail
    assert doctor.blocking(list(findings.values()))


def test_foreign_container_is_stopped_with_docker() -> None:
    port = run(found=[listener(container=STRANGER_CONTAINER)])["port"]
    assert port.status == "fail" and port.fix.startswith(f"docker stop {'b' * 12}")


def test_listener_without_visible_owner_blocks() -> None:
    port = run(found=[listener(pid=None)])["port"]
    assert port.status == "fail" and "owner process not visible" in port.detail


def test_our_replicas_are_reported_as_ours() -> None:
    engine = Engine([replica(OURS, "web", 1, pid=11), replica("c" * 64, "web", 2, pid=12)])
    found = [
        listener(pid=11, container=OURS, inode=1),
        listener(pid=12, container="c" * 64, inode=2),
    ]
    findings = run(engine=lambda: engine, found=found, reuseport=None)
    assert statuses(findings)["port"] == "ok"
    assert findings["port"].detail == (
        "port 8080 is served by replicas of 'web' "
        "(replica 1: pid 11, uid 0; replica 2: pid 12, uid 0)"
    )
    assert "replica web.1 as uid 0, replica web.2 as uid 0" in findings["uids"].detail
    assert not doctor.blocking(list(findings.values()))


def test_two_services_of_ours_on_one_port_block() -> None:
    engine = Engine([replica(OURS, "web", 1, pid=11), replica("c" * 64, "api", 1, pid=12)])
    found = [listener(pid=11, inode=1), listener(pid=12, inode=2)]
    port = run(engine=lambda: engine, found=found)["port"]
    assert port.status == "fail" and "several services ('api', 'web')" in port.detail


def test_a_stranger_with_the_replicas_uid_in_their_group_is_flagged() -> None:
    engine = Engine([replica(OURS)])
    found = [listener(pid=11, container=OURS, inode=1), listener(pid=99, inode=2)]
    findings = run_list(engine=lambda: engine, found=found, reuseport=True)
    uids = findings[-1]
    assert [(f.check, f.status) for f in findings[-3:]] == [
        ("port", "ok"),  # the replica
        ("port", "fail"),  # the stranger
        ("uids", "fail"),
    ]
    assert "pid 99 shares uid 0 with the replicas of 'web'" in uids.detail
    assert uids.fix.startswith("kill 99;") and "--user UID" in uids.fix
    assert doctor.blocking(findings)


def test_a_stranger_with_the_replicas_uid_without_reuseport_is_a_warning() -> None:
    engine = Engine([replica(OURS)])
    found = [listener(pid=11, container=OURS, inode=1), listener(pid=99, inode=2)]
    uids = run_list(engine=lambda: engine, found=found, reuseport=False)[-1]
    assert uids.status == "warn" and "if it ever sets the option" in uids.detail


def test_another_uid_cannot_join_the_group() -> None:
    engine = Engine([replica(OURS)])
    found = [listener(pid=11, container=OURS, inode=1), listener(pid=99, uid=1000, inode=2)]
    findings = run_list(engine=lambda: engine, found=found)
    assert [(f.check, f.status) for f in findings[-3:]] == [
        ("port", "ok"),
        ("port", "fail"),  # still foreign: `up` refuses the port
        ("uids", "ok"),
    ]


def test_ownership_is_the_process_tree_not_the_cgroup() -> None:
    # A socket in one of our containers' cgroups that no replica's process tree holds is a
    # stranger; one a replica's tree holds is ours whatever cgroup its process sits in.
    engine = Engine([replica(OURS, pid=11)])
    found = [listener(pid=11, container=None, inode=1), listener(pid=50, container=OURS, inode=2)]
    findings = run_list(engine=lambda: engine, found=found, reuseport=False)
    ports = [f for f in findings if f.check == "port"]
    assert [f.status for f in ports] == ["ok", "fail"]
    assert "replica 1: pid 11" in ports[0].detail
    assert f"pid 50 (python3) in container {OURS[:12]} on 0.0.0.0" in ports[1].detail
    assert ports[1].fix == f"docker stop {OURS[:12]} (or choose another --port)"


def test_a_stranger_under_another_uid_is_named_as_such() -> None:
    engine = Engine([replica(OURS, pid=11)])
    found = [listener(pid=11, inode=1), listener(pid=99, uid=1000, inode=2)]
    stranger = run_list(engine=lambda: engine, found=found, reuseport=True)[-2]
    assert stranger.status == "fail" and "under another uid than the replicas'" in stranger.detail


def test_not_root_warns() -> None:
    uids = run(euid=1000)["uids"]
    assert uids.status == "warn" and "doctor runs as uid 1000" in uids.detail


def test_engine_down_is_a_finding_and_the_host_checks_still_run() -> None:
    findings = run(engine=down, migrate=0, found=[listener(container=OURS)])
    assert findings["engine"].status == "fail"
    assert findings["engine"].detail == "no Docker engine answers at unix:///x.sock"
    assert findings["engine"].fix == "scripts/ensure-docker (or systemctl start docker)"
    assert findings["tcp_migrate_req"].status == "warn"
    # A container's socket may be a replica of ours: unknown without the engine.
    assert findings["port"].status == "warn" and "is unknown" in findings["port"].detail
    assert doctor.blocking(list(findings.values()))


def test_json_shape() -> None:
    data = doctor.as_json([Finding("engine", "fail", "down", "start it"), Finding("x", "ok", "")])
    assert data == {
        "blocking": True,
        "findings": [
            {"check": "engine", "status": "fail", "detail": "down", "fix": "start it"},
            {"check": "x", "status": "ok", "detail": "", "fix": ""},
        ],
    }


# --------------------------------------------------------------------------- real sockets


@pytest.fixture
def listening() -> Iterator[Callable[[bool], Listener]]:
    """Listeners of this process on a free port, with or without SO_REUSEPORT."""
    opened: list[socket.socket] = []

    def make(reuseport: bool) -> Listener:
        sock = socket.socket()
        opened.append(sock)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        inode = os.fstat(sock.fileno()).st_ino
        port = sock.getsockname()[1]
        return Listener(
            inode, "127.0.0.1", port, "ipv4", os.geteuid(), 0, (os.getpid(),), "python", None
        )

    yield make
    for sock in opened:
        sock.close()


@pytest.mark.parametrize("flag", [True, False])
def test_reuseport_is_read_from_the_socket_itself(
    listening: Callable[[bool], Listener], flag: bool
) -> None:
    assert options.has_reuseport(listening(flag)) is flag


@pytest.mark.parametrize("flag", [True, False])
def test_reuseport_falls_back_to_a_probe_bind(
    listening: Callable[[bool], Listener], flag: bool
) -> None:
    unseen = listening(flag)
    unseen = Listener(
        unseen.inode, unseen.address, unseen.port, "ipv4", unseen.uid, 0, (), None, None
    )
    assert options.has_reuseport(unseen) is flag
    # Beside another uid's socket a bind fails whatever its options: no answer.
    assert options.has_reuseport(unseen, euid=unseen.uid + 1) is None


# --------------------------------------------------------------------------- the command


def fake_diagnose(findings: list[Finding]) -> Callable[..., list[Finding]]:
    def diagnose(port: int | None, connect: object) -> list[Finding]:
        return findings

    return diagnose


def test_command_exits_1_only_when_something_blocks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    warned = [Finding("tcp_migrate_req", "warn", "off", "sysctl -w net.ipv4.tcp_migrate_req=1")]
    monkeypatch.setattr(doctor, "diagnose", fake_diagnose(warned))
    cli.main(["doctor"])  # returns normally: exit status 0
    out = capsys.readouterr().out
    assert "! " in out and "fix: sysctl -w net.ipv4.tcp_migrate_req=1" in out
    assert "nothing stops `reuseport up` (1 warning)" in out

    failed = [Finding("port", "fail", "port 1 is held by pid [7]", "kill 7")]
    monkeypatch.setattr(doctor, "diagnose", fake_diagnose(failed))
    with pytest.raises(SystemExit) as exited:
        cli.main(["doctor", "--json"])
    assert exited.value.code == 1
    data = json.loads(capsys.readouterr().out)
    assert data["blocking"] is True and data["findings"][0]["detail"].endswith("pid [7]")


def test_command_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["doctor", "--help"])  # returns normally: exit status 0
    assert "Usage: reuseport doctor" in capsys.readouterr().out


def test_command_refuses_a_port_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["doctor", "--port", "70000"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "reuseport: error: port must be between 1 and 65535, got 70000"
    )


def test_steering_is_reported_with_why_it_is_not_available() -> None:
    assert run()["steering"].status == "ok"
    missing = run(steering="bpf(2) refused: needs CAP_SYS_ADMIN (or CAP_BPF)")["steering"]
    assert missing.status == "warn"
    assert "needs CAP_SYS_ADMIN (or CAP_BPF)" in missing.detail
    assert "kernel's hash" in missing.detail and missing.fix
