"""The bpf(2) system call from plain Python (ctypes), and a tiny eBPF instruction assembler.

No libbpf, no compiler: maps and programs are created with the raw ``union bpf_attr``
layouts of ``include/uapi/linux/bpf.h``; programs are lists of instructions built with the
named constructors below (one per instruction kind) and resolved by :func:`assemble`.
Every failure raises :class:`reuseport.errors.SteeringUnavailable` naming what failed and
the errno text; a rejected program carries the kernel verifier's log in its message.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

from reuseport.errors import SteeringUnavailable

# --------------------------------------------------------------------------- constants

_SYS_BPF = {"x86_64": 321, "aarch64": 280}
SYS_PIDFD_GETFD = 438  # the same on every architecture (unified numbers since 5.1)

# commands
_MAP_CREATE, _MAP_LOOKUP, _MAP_UPDATE, _MAP_DELETE = 0, 1, 2, 3
_PROG_LOAD, _PROG_GET_FD_BY_ID, _MAP_GET_FD_BY_ID, _OBJ_GET_INFO_BY_FD = 5, 13, 14, 15

MAP_ARRAY, MAP_REUSEPORT_SOCKARRAY = 2, 20
PROG_SK_REUSEPORT = 21
SK_REUSEPORT_SELECT, SK_REUSEPORT_SELECT_OR_MIGRATE = 39, 40  # enum bpf_attach_type
ANY, NOEXIST, EXIST = 0, 1, 2  # map update flags
OBJ_NAME_LEN = 16

# helper functions (enum bpf_func_id)
FUNC_MAP_LOOKUP_ELEM, FUNC_SK_SELECT_REUSEPORT = 1, 82

# registers
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

# opcode parts
_LD, _LDX, _ST, _STX, _JMP, _ALU64 = 0x00, 0x01, 0x02, 0x03, 0x05, 0x07
W, DW = 0x00, 0x18  # access sizes: 32 and 64 bits
_IMM, _MEM, _ATOMIC = 0x00, 0x60, 0xC0
_K, _X = 0x00, 0x08
ADD, SUB, LSH, AND, MOD, MOV = 0x00, 0x10, 0x60, 0x50, 0x90, 0xB0  # alu ops
JEQ, JGE, JGT, JLT, JNE = 0x10, 0x30, 0x20, 0xA0, 0x50  # conditional jumps (unsigned)
_JA, _CALL, _EXIT = 0x00, 0x80, 0x90
_FETCH = 0x01
_PSEUDO_MAP_FD = 1


# --------------------------------------------------------------------------- the syscall

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _errno_text(err: int) -> str:
    if err == errno.EPERM:
        return "needs CAP_SYS_ADMIN (or CAP_BPF and CAP_NET_ADMIN)"
    if err == errno.ENOSYS:
        return "not supported by this kernel"
    return os.strerror(err)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise SteeringUnavailable(f"{what}: bpf(2) number unknown on {platform.machine()}")
    result = int(_libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), attr, len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise SteeringUnavailable(f"{what}: {_errno_text(err)}", err)
    return result


def _attr(layout: str, *values: object) -> ctypes.Array[ctypes.c_char]:
    """A zeroed ``union bpf_attr`` (128 bytes) with its first fields packed by ``layout``."""
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(layout, attr, 0, *values)
    return attr


def _address(buffer: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buffer)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> int:
    attr = _attr("<7I16s", map_type, key_size, value_size, max_entries, 0, 0, 0, name.encode())
    return _bpf(_MAP_CREATE, attr, f"creating bpf map {name}")


def _elem(
    cmd: int, fd: int, key: bytes, value: ctypes.Array[ctypes.c_char] | None, flags: int, what: str
) -> int:
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_at = _address(value) if value is not None else 0
    return _bpf(cmd, _attr("<IIQQQ", fd, 0, _address(key_buf), value_at, flags), what)


def map_update(fd: int, key: bytes, value: bytes, flags: int = ANY) -> None:
    _elem(
        _MAP_UPDATE,
        fd,
        key,
        ctypes.create_string_buffer(value, len(value)),
        flags,
        "updating bpf map",
    )


def map_delete(fd: int, key: bytes) -> None:
    _elem(_MAP_DELETE, fd, key, None, 0, "deleting from bpf map")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value under ``key``, None when there is none (ENOENT)."""
    value = ctypes.create_string_buffer(value_size)
    try:
        _elem(_MAP_LOOKUP, fd, key, value, 0, "reading bpf map")
    except SteeringUnavailable as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return value.raw


def prog_load(
    prog_type: int, insns: bytes, name: str, license: str = "GPL", expected_attach_type: int = 0
) -> int:
    """Load a program; on rejection retry with a verifier log and raise with it."""
    license_buf = ctypes.create_string_buffer(license.encode())
    insns_buf = ctypes.create_string_buffer(insns, len(insns))
    log = ctypes.create_string_buffer(1 << 16)

    def attempt(log_level: int) -> int:
        attr = _attr(
            "<IIQQIIQII16sII",
            prog_type,
            len(insns) // 8,
            _address(insns_buf),
            _address(license_buf),
            log_level,
            len(log) if log_level else 0,
            _address(log) if log_level else 0,
            0,
            0,
            name.encode(),
            0,
            expected_attach_type,
        )
        return _bpf(_PROG_LOAD, attr, f"loading bpf program {name}")

    try:
        return attempt(0)
    except SteeringUnavailable as first:
        if first.errno not in (errno.EINVAL, errno.EACCES, errno.E2BIG):
            raise
        try:
            return attempt(1)
        except SteeringUnavailable as failed:
            text = log.value.decode(errors="replace").strip().replace("\n", " | ")
            raise SteeringUnavailable(f"{failed}; verifier: {text[-800:]}", failed.errno) from None


def prog_get_fd_by_id(prog_id: int) -> int:
    return _bpf(_PROG_GET_FD_BY_ID, _attr("<I", prog_id), f"opening bpf program {prog_id}")


def map_get_fd_by_id(map_id: int) -> int:
    return _bpf(_MAP_GET_FD_BY_ID, _attr("<I", map_id), f"opening bpf map {map_id}")


@dataclass(frozen=True)
class ObjectInfo:
    """What OBJ_GET_INFO_BY_FD says of a program or a map (the fields reuseport checks)."""

    type: int
    id: int
    name: str
    map_ids: tuple[int, ...] = ()  # programs only
    value_size: int = 0  # maps only


def _info(fd: int, buffer: ctypes.Array[ctypes.c_char], what: str) -> None:
    _bpf(_OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, len(buffer), _address(buffer)), what)


def prog_info(fd: int) -> ObjectInfo:
    ids = (ctypes.c_uint32 * 16)()
    info = ctypes.create_string_buffer(80)  # struct bpf_prog_info up to `name`
    struct.pack_into("<IQ", info, 52, len(ids), ctypes.addressof(ids))  # nr_map_ids, map_ids
    _info(fd, info, "reading bpf program info")
    prog_type, prog_id = struct.unpack_from("<II", info, 0)
    (nr_maps,) = struct.unpack_from("<I", info, 52)
    name = info.raw[64:80].split(b"\0")[0].decode(errors="replace")
    return ObjectInfo(prog_type, prog_id, name, tuple(ids[: min(nr_maps, len(ids))]))


def map_info(fd: int) -> ObjectInfo:
    info = ctypes.create_string_buffer(40)  # struct bpf_map_info up to `name`
    _info(fd, info, "reading bpf map info")
    map_type, map_id, _key_size, value_size = struct.unpack_from("<4I", info, 0)
    name = info.raw[24:40].split(b"\0")[0].decode(errors="replace")
    return ObjectInfo(map_type, map_id, name, value_size=value_size)


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A duplicate of fd ``target_fd`` of the process behind ``pidfd`` (needs ptrace rights)."""
    fd = int(_libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), pidfd, target_fd, 0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


# --------------------------------------------------------------------------- assembler


@dataclass(frozen=True)
class Insn:
    """One instruction; ``target`` names a label for jumps (resolved by assemble)."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None


def mov64_reg(dst: int, src: int) -> Insn:
    return Insn(_ALU64 | MOV | _X, dst, src)


def mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(_ALU64 | MOV | _K, dst, imm=imm)


def alu64_reg(op: int, dst: int, src: int) -> Insn:  # dst op= src (ADD, SUB, MOD, ...)
    return Insn(_ALU64 | op | _X, dst, src)


def alu64_imm(op: int, dst: int, imm: int) -> Insn:  # dst op= imm
    return Insn(_ALU64 | op | _K, dst, imm=imm)


def ldx_mem(size: int, dst: int, src: int, off: int) -> Insn:  # dst = *(size *)(src + off)
    return Insn(_LDX | _MEM | size, dst, src, off)


def stx_mem(size: int, dst: int, off: int, src: int) -> Insn:  # *(size *)(dst + off) = src
    return Insn(_STX | _MEM | size, dst, src, off)


def st_mem(size: int, dst: int, off: int, imm: int) -> Insn:  # *(size *)(dst + off) = imm
    return Insn(_ST | _MEM | size, dst, off=off, imm=imm)


def atomic_add(size: int, dst: int, off: int, src: int) -> Insn:  # lock *(dst + off) += src
    return Insn(_STX | _ATOMIC | size, dst, src, off, ADD)


def atomic_fetch_add(size: int, dst: int, off: int, src: int) -> Insn:
    """src = fetch-and-add(*(dst + off), src): BPF_ATOMIC | BPF_FETCH, kernel >= 5.12."""
    return Insn(_STX | _ATOMIC | size, dst, src, off, ADD | _FETCH)


def jmp_imm(op: int, dst: int, imm: int, target: str) -> Insn:  # if dst op imm goto target
    return Insn(_JMP | op | _K, dst, imm=imm, target=target)


def jmp_reg(op: int, dst: int, src: int, target: str) -> Insn:  # if dst op src goto target
    return Insn(_JMP | op | _X, dst, src, target=target)


def jump(target: str) -> Insn:
    return Insn(_JMP | _JA, target=target)


def call(helper: int) -> Insn:
    return Insn(_JMP | _CALL, imm=helper)


def exit_insn() -> Insn:
    return Insn(_JMP | _EXIT)


def ld_map_fd(dst: int, map_fd: int) -> list[Insn]:
    """dst = the map behind ``map_fd`` (ld_imm64 with src=BPF_PSEUDO_MAP_FD: two slots)."""
    return [Insn(_LD | DW | _IMM, dst, _PSEUDO_MAP_FD, imm=map_fd), Insn(0)]


Line = Insn | list[Insn] | str  # an instruction, a two-slot instruction, or a label


def assemble(program: list[Line]) -> bytes:
    """Encode ``program`` (struct bpf_insn: ``<BBhi``), resolving labels to jump offsets."""
    flat: list[Insn] = []
    labels: dict[str, int] = {}
    for line in program:
        if isinstance(line, str):
            labels[line] = len(flat)
        else:
            flat.extend(line if isinstance(line, list) else [line])
    out = bytearray()
    for index, insn in enumerate(flat):
        off = insn.off if insn.target is None else labels[insn.target] - index - 1
        out += struct.pack("<BBhi", insn.code, insn.dst | insn.src << 4, off, insn.imm)
    return bytes(out)
