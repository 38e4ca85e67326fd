"""reuseport.kernel's reads against real sockets of this process and a fake /proc tree."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reuseport.engine.base import Replica
from reuseport.kernel import attribution, destroy, processes
from reuseport.kernel import sockets as kernel_sockets
from reuseport.kernel.processes import container_id_of, process_tree
from reuseport.kernel.sockets import listeners, listening_inodes, pids_listening

CID = "0123456789abcdef" * 4  # 64 hex
CID2 = "fedcba9876543210" * 4


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def _wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _my_comm() -> str:
    return Path(f"/proc/{os.getpid()}/comm").read_text().strip()


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """A list to put sockets in; every one of them is closed afterwards."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """A list to put processes in (started with start_new_session); all are killed after."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()


def _listen(
    sockets: list[socket.socket],
    port: int = 0,
    host: str = "127.0.0.1",
    family: socket.AddressFamily = socket.AF_INET,
    backlog: int = 16,
) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sockets.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


# --------------------------------------------------------------------------- real sockets


def test_two_reuseport_listeners_in_this_process(sockets: list[socket.socket]) -> None:
    first = _listen(sockets, host="0.0.0.0")
    port = first.getsockname()[1]
    second = _listen(sockets, port=port, host="0.0.0.0")

    found = listeners(port)

    assert {lst.inode for lst in found} == {_inode(first), _inode(second)}
    for lst in found:
        assert lst.address == "0.0.0.0"
        assert lst.port == port
        assert lst.family == "ipv4"
        assert lst.uid == os.geteuid()
        assert lst.accept_queue == 0
        assert lst.pids == (os.getpid(),)
        assert lst.program == _my_comm()
    assert listening_inodes(port).keys() == {_inode(first), _inode(second)}


def test_ipv6_listener_reports_family_ipv6(sockets: list[socket.socket]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        sock = _listen(sockets, host="::", family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"cannot bind [::]: {exc}")
    port = sock.getsockname()[1]

    (lst,) = listeners(port)

    assert lst.inode == _inode(sock)
    assert lst.family == "ipv6"
    assert lst.address == "::"
    assert lst.pids == (os.getpid(),)


def test_connected_sockets_are_not_listeners(sockets: list[socket.socket]) -> None:
    server = _listen(sockets)
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    sockets.append(client)
    accepted, _ = server.accept()
    sockets.append(accepted)  # ESTABLISHED with local port == port

    inodes = listening_inodes(port)

    assert set(inodes) == {_inode(server)}
    assert [lst.inode for lst in listeners(port)] == [_inode(server)]
    server.close()
    assert listening_inodes(port) == {}
    assert listeners(port) == []


def test_accept_queue_counts_unaccepted_connections(sockets: list[socket.socket]) -> None:
    server = _listen(sockets, backlog=16)
    port = server.getsockname()[1]
    for _ in range(3):
        sockets.append(socket.create_connection(("127.0.0.1", port)))

    assert _wait_for(lambda: listening_inodes(port)[_inode(server)][3] >= 3)
    (lst,) = listeners(port)
    assert lst.accept_queue == 3

    sockets.append(server.accept()[0])
    assert _wait_for(lambda: listening_inodes(port)[_inode(server)][3] == 2)


_CHILD_LISTENER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def _child_listener(procs: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], int]:
    """A subprocess listening with SO_REUSEPORT on a port it prints (killed after the test)."""
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_LISTENER],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    procs.append(child)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def test_pids_listening_follows_a_subprocess(
    procs: list[subprocess.Popen[str]], sockets: list[socket.socket]
) -> None:
    child, port = _child_listener(procs)
    # A socket of ours on the same port must not make our pid count as "listening".
    bystander = socket.create_connection(("127.0.0.1", port))
    sockets.append(bystander)

    assert pids_listening(port, [child.pid, os.getpid()]) == {child.pid}
    (lst,) = listeners(port)
    assert lst.pids == (child.pid,)
    assert lst.program is not None and lst.program.startswith("python")

    child.kill()
    child.wait(timeout=5)

    assert pids_listening(port, [child.pid, os.getpid()]) == set()
    assert listeners(port) == []


def test_pids_listening_ignores_unknown_pids(sockets: list[socket.socket]) -> None:
    server = _listen(sockets)
    port = server.getsockname()[1]
    assert pids_listening(port, [os.getpid(), 2**22 + 12345]) == {os.getpid()}
    assert pids_listening(port, []) == set()


def test_process_tree_includes_child_of_shell(procs: list[subprocess.Popen[str]]) -> None:
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 30 & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    procs.append(shell)
    assert shell.stdout is not None
    sleeper = int(shell.stdout.readline())

    tree = process_tree(shell.pid)

    assert tree[0] == shell.pid
    assert sleeper in tree
    assert os.getpid() not in tree


def test_process_tree_of_vanished_pid_is_empty(procs: list[subprocess.Popen[str]]) -> None:
    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait(timeout=5)
    assert process_tree(gone.pid) == []


# --------------------------------------------------------------------------- fake /proc


def _tcp_line(
    local: str, port: int, state: str, inode: int, uid: int = 0, rx: int = 0, remote_port: int = 0
) -> str:
    remote = "0" * len(local)
    return (
        f"   0: {local}:{port:04X} {remote}:{remote_port:04X} {state} 00000000:{rx:08X} "
        f"00:00000000 00000000 {uid:5d}        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


_TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    "   uid  timeout inode\n"
)


@pytest.fixture
def fake_proc(tmp_path: Path) -> Path:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(_TCP_HEADER)
    (tmp_path / "net" / "tcp6").write_text(_TCP_HEADER)
    return tmp_path


def _fake_pid(
    proc: Path,
    pid: int,
    ppid: int = 1,
    comm: str = "app",
    cgroup: str = "0::/\n",
    socket_inodes: tuple[int, ...] = (),
) -> None:
    pdir = proc / str(pid)
    (pdir / "fd").mkdir(parents=True)
    (pdir / "comm").write_text(comm + "\n")
    (pdir / "cgroup").write_text(cgroup)
    (pdir / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0\n")
    (pdir / "fd" / "0").symlink_to("/dev/null")
    (pdir / "fd" / "1").symlink_to("pipe:[99]")
    for fd, inode in enumerate(socket_inodes, start=3):
        (pdir / "fd" / str(fd)).symlink_to(f"socket:[{inode}]")


@pytest.mark.skipif(sys.byteorder != "little", reason="literals are little-endian /proc text")
def test_listening_inodes_decodes_addresses(fake_proc: Path) -> None:
    (fake_proc / "net" / "tcp").write_text(
        _TCP_HEADER
        + _tcp_line("0100007F", 8080, "0A", 101, uid=1000, rx=5)  # 127.0.0.1
        + _tcp_line("00000000", 8080, "0A", 102)  # 0.0.0.0
        + _tcp_line("0100007F", 8080, "01", 103)  # ESTABLISHED: ignored
        + _tcp_line("0100007F", 9090, "0A", 104)  # other port
        + _tcp_line("0100007F", 9090, "01", 105, remote_port=8080)  # remote port matches
        + _tcp_line("0100007F", 8080, "0A", 0)  # no inode: ignored
    )
    (fake_proc / "net" / "tcp6").write_text(
        _TCP_HEADER
        + _tcp_line("0" * 32, 8080, "0A", 201)  # ::
        + _tcp_line("0000000000000000FFFF00000100007F", 8080, "0A", 202)  # ::ffff:127.0.0.1
        + _tcp_line("00000000000000000000000001000000", 8080, "0A", 203)  # ::1
        + _tcp_line("B80D0120000000000000000001000000", 8080, "0A", 204)  # 2001:db8::1
    )

    assert listening_inodes(8080, str(fake_proc)) == {
        101: ("127.0.0.1", "ipv4", 1000, 5),
        102: ("0.0.0.0", "ipv4", 0, 0),
        201: ("::", "ipv6", 0, 0),
        202: ("::ffff:127.0.0.1", "ipv6", 0, 0),
        203: ("::1", "ipv6", 0, 0),
        204: ("2001:db8::1", "ipv6", 0, 0),
    }
    assert set(listening_inodes(9090, str(fake_proc))) == {104}
    assert listening_inodes(1, str(fake_proc)) == {}


def test_listening_inodes_without_tcp6(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(_TCP_HEADER + _tcp_line("00000000", 80, "0A", 7))
    assert listening_inodes(80, str(tmp_path)) == {7: ("0.0.0.0", "ipv4", 0, 0)}


def test_listeners_on_fake_proc(fake_proc: Path) -> None:
    (fake_proc / "net" / "tcp").write_text(
        _TCP_HEADER
        + _tcp_line("00000000", 8080, "0A", 301, uid=33, rx=2)
        + _tcp_line("00000000", 8080, "0A", 302, uid=33)
        + _tcp_line("00000000", 8080, "0A", 303, uid=33)
    )
    _fake_pid(
        fake_proc, 20, comm="nginx", cgroup=f"12:memory:/docker/{CID}\n", socket_inodes=(301,)
    )
    _fake_pid(
        fake_proc,
        10,
        comm="python3",
        cgroup=f"0::/system.slice/docker-{CID2}.scope\n",
        socket_inodes=(302, 555),
    )
    _fake_pid(fake_proc, 11, comm="python3", socket_inodes=(302,))  # forked worker
    (fake_proc / "12").mkdir()  # vanished mid-scan: no fd dir, no comm
    (fake_proc / "self").mkdir()  # non-numeric entries are ignored

    found = {lst.inode: lst for lst in listeners(8080, str(fake_proc))}

    assert set(found) == {301, 302, 303}
    assert found[301].pids == (20,)
    assert found[301].program == "nginx"
    assert found[301].container_id == CID
    assert found[301].accept_queue == 2
    assert found[301].uid == 33
    assert found[302].pids == (10, 11)
    assert found[302].program == "python3"
    assert found[302].container_id == CID2
    assert found[303].pids == ()  # nobody we can see holds it
    assert found[303].program is None and found[303].container_id is None
    assert pids_listening(8080, [10, 11, 12, 20, 99], str(fake_proc)) == {10, 11, 20}


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        # cgroup v1, cgroupfs driver
        (
            f"12:pids:/docker/{CID}\n11:memory:/docker/{CID}\n1:name=systemd:/docker/{CID}\n",
            CID,
        ),
        # cgroup v1, systemd driver
        (f"4:memory:/system.slice/docker-{CID}.scope\n1:name=systemd:/\n", CID),
        # cgroup v2, systemd driver / cgroupfs driver / other nesting
        (f"0::/system.slice/docker-{CID}.scope\n", CID),
        (f"0::/docker/{CID}\n", CID),
        (f"0::/kubepods/besteffort/pod1234/{CID}\n", CID),
        # nested docker (dind): innermost container
        (f"0::/docker/{CID2}/docker/{CID}\n", CID),
        # not in a container
        ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
        ("12:memory:/process_api/a93b6a7f97428ac4938295a4f72c3288\n0::/\n", None),
        (f"0::/docker/{CID}0\n", None),  # 65 hex: not an id
        ("", None),
    ],
)
def test_container_id_of(fake_proc: Path, cgroup: str, expected: str | None) -> None:
    _fake_pid(fake_proc, 42, cgroup=cgroup)
    assert container_id_of(42, str(fake_proc)) == expected


def test_container_id_of_missing_pid(fake_proc: Path) -> None:
    assert container_id_of(4242, str(fake_proc)) is None


def test_container_id_of_this_process_is_not_docker() -> None:
    assert container_id_of(os.getpid()) is None


def test_process_tree_fake_proc_stat_scan(fake_proc: Path) -> None:
    _fake_pid(fake_proc, 1, ppid=0, comm="init")
    _fake_pid(fake_proc, 100, ppid=1, comm="tini")
    _fake_pid(fake_proc, 101, ppid=100, comm="odd) name (x")  # parens in comm
    _fake_pid(fake_proc, 102, ppid=101)
    _fake_pid(fake_proc, 103, ppid=100)
    _fake_pid(fake_proc, 200, ppid=1)
    (fake_proc / "104").mkdir()  # vanished: no stat

    assert process_tree(100, str(fake_proc)) == [100, 101, 103, 102]
    assert process_tree(999, str(fake_proc)) == []


def test_process_tree_fake_proc_children_files(fake_proc: Path) -> None:
    def task(pid: int, tid: int, children: str) -> None:
        tdir = fake_proc / str(pid) / "task" / str(tid)
        tdir.mkdir(parents=True)
        (tdir / "children").write_text(children)

    task(100, 100, "101 ")
    task(100, 105, "103 ")  # child forked by another thread
    task(101, 101, "102 ")
    task(102, 102, "")
    task(103, 103, "104 ")  # 104 vanished: no dir at all

    assert process_tree(100, str(fake_proc)) == [100, 101, 103, 102]


def test_sock_diag_and_proc_text_agree(sockets: list[socket.socket]) -> None:
    v4 = _listen(sockets, host="127.0.0.1")
    port = v4.getsockname()[1]
    _listen(sockets, port=port, host="127.0.0.1")
    with contextlib.suppress(OSError):  # no IPv6 here
        _listen(sockets, port=port, host="::", family=socket.AF_INET6)
    for _ in range(2):
        sockets.append(socket.create_connection(("127.0.0.1", port)))
    # The two connections are hashed over the group: count them over all its listeners.
    assert _wait_for(
        lambda: sum(e[3] for e in kernel_sockets._listening_inodes_diag(port).values()) == 2
    )

    via_diag = kernel_sockets._listening_inodes_diag(port)
    via_proc = kernel_sockets._listening_inodes_proc(port, "/proc")

    assert via_diag == via_proc
    assert len(via_diag) >= 2
    assert sum(entry[3] for entry in via_diag.values()) == 2


def test_falls_back_to_proc_text_without_sock_diag(
    sockets: list[socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _listen(sockets)
    port = server.getsockname()[1]

    def no_netlink(port: int) -> dict[int, tuple[str, str, int, int]]:
        raise PermissionError("sock_diag denied")

    monkeypatch.setattr(kernel_sockets, "_listening_inodes_diag", no_netlink)
    assert set(listening_inodes(port)) == {_inode(server)}
    assert pids_listening(port, [os.getpid()]) == {os.getpid()}


def test_calls_leave_no_descriptor_open(sockets: list[socket.socket]) -> None:
    server = _listen(sockets)
    port = server.getsockname()[1]
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(5):
        listeners(port)
        pids_listening(port, [os.getpid()])
        process_tree(os.getpid())
        container_id_of(os.getpid())
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_port_sockets_tells_accepted_from_queued_connections(
    sockets: list[socket.socket],
) -> None:
    server = _listen(sockets, backlog=77)
    port = server.getsockname()[1]
    for _ in range(3):
        sockets.append(socket.create_connection(("127.0.0.1", port)))
    accepted = server.accept()[0]
    sockets.append(accepted)

    assert _wait_for(lambda: kernel_sockets.port_sockets(port).unaccepted == 2)
    table = kernel_sockets.port_sockets(port)
    assert table.listeners[_inode(server)].backlog == 77
    assert table.listeners[_inode(server)].accept_queue == 2
    assert table.accepted == {_inode(accepted)}
    assert _inode(accepted) in processes.socket_inodes(os.getpid())
    assert kernel_sockets.port_sockets(port, connections=False).accepted == frozenset()


def test_close_listener_closes_exactly_the_named_member_of_a_reuseport_group(
    sockets: list[socket.socket],
) -> None:
    # SOCK_DESTROY needs CAP_NET_ADMIN: the suite runs as root, like the supervisor.
    group = [_listen(sockets)]
    port = group[0].getsockname()[1]
    group += [_listen(sockets, port=port) for _ in range(5)]
    victim = group[3]

    assert destroy.close_listener(port, _inode(victim))

    left = set(listening_inodes(port))
    assert left == {_inode(s) for s in group} - {_inode(victim)}
    assert destroy.close_listener(port, _inode(victim))  # already gone: nothing to do


def test_socket_fds_names_the_fd_of_each_socket(sockets: list[socket.socket]) -> None:
    server = _listen(sockets)
    held = processes.socket_fds(os.getpid())
    assert held[_inode(server)] == server.fileno()
    assert set(held) == processes.socket_inodes(os.getpid())
    assert processes.socket_fds(2**22 + 1) == {}  # no such pid


def test_observe_attributes_by_process_tree_and_classes_strangers(
    procs: list[subprocess.Popen[str]], sockets: list[socket.socket]
) -> None:
    child, port = _child_listener(procs)
    stranger = _listen(sockets, port=port)  # same uid, same address: it joins the group
    replica = Replica(CID, "web.1", "web", 1, "running", child.pid, "img", "", "", 0, 0)

    seen = attribution.observe(port, [replica], connections=False)
    assert set(seen.listening) == {CID} and seen.listening[CID] == child.pid
    (foreign,) = seen.foreign
    assert foreign.inode == _inode(stranger) and foreign.pid == os.getpid()
    assert foreign.kind == "foreign"  # the replicas' uid; its SO_REUSEPORT is not read
    assert f"pid {os.getpid()} (" in foreign.describe()

    alone = attribution.observe(port, [], connections=False)
    assert alone.listening == {} and len(alone.foreign) == 2
    assert {f.kind for f in alone.foreign} == {None}  # no replica listens: no uid to compare
