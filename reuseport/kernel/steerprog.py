"""The SK_REUSEPORT programs of :mod:`reuseport.kernel.steer`, hand-assembled.

Both read the state map (``u32 count | u32 pad | u64 counter | u32 order[MAX_MEMBERS]``),
pick a position in ``order[0:count]`` and select that sockarray slot. They always return
SK_PASS: with no selection (no members, or a member closed a moment ago) the kernel's own
hash decides, so a connection is never dropped. They also run for requests migrated off a
closing listener (``ctx->migrating_sk`` set); the same choice applies to them.
"""

from __future__ import annotations

from reuseport.kernel import bpf
from reuseport.kernel.bpf import (
    ADD,
    AND,
    DW,
    JEQ,
    JGE,
    LSH,
    MOD,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
    W,
)

__all__ = ["LEAST_CONN_SCAN", "MAX_MEMBERS", "ORDER_AT", "least_conn_pick", "pick_and_select"]

MAX_MEMBERS = 512  # sockarray size: 256 replicas + surge, per family (a power of two)
LEAST_CONN_SCAN = 64  # least-conn compares at most this many members per connection
ORDER_AT = 16  # offset of order[] in the state value
SK_PASS = 1


def pick_and_select(state_fd: int, socks_fd: int, pick: list[bpf.Line]) -> bytes:
    """The program around a policy's ``pick``: it runs with r6 = ctx, r7 = &state,
    r8 = count (> 0) and leaves the chosen position (< MAX_MEMBERS) in r9."""
    return bpf.assemble([
        bpf.mov64_reg(R6, R1),                         # r6 = ctx (kept across calls)
        bpf.st_mem(W, R10, -4, 0),                     # stack[-4] = 0 (key of the state entry)
        bpf.ld_map_fd(R1, state_fd),                   # r1 = state map
        bpf.mov64_reg(R2, R10),                        # r2 = fp
        bpf.alu64_imm(ADD, R2, -4),                    # r2 = &key
        bpf.call(bpf.FUNC_MAP_LOOKUP_ELEM),            # r0 = &state or NULL
        bpf.jmp_imm(JEQ, R0, 0, "pass"),               # no state: let the kernel hash
        bpf.mov64_reg(R7, R0),                         # r7 = &state
        bpf.ldx_mem(W, R8, R7, 0),                     # r8 = state.count
        bpf.jmp_imm(JEQ, R8, 0, "pass"),               # no members: let the kernel hash
        bpf.mov64_imm(R9, 1),                          # r9 = 1
        bpf.atomic_fetch_add(DW, R7, 8, R9),           # r9 = state.counter++ (atomic, all CPUs)
        bpf.alu64_reg(MOD, R9, R8),                    # r9 = counter % count: a start position
        *pick,                                         # r9 = the chosen position
        *_select_position(socks_fd),                   # r0 = 0 when selected
        bpf.jmp_imm(JEQ, R0, 0, "pass"),               # selected: done
        # The slot is empty: that member closed since the supervisor's last sync. Try the
        # next position once rather than let the kernel hash to ANY listener of the group.
        bpf.alu64_imm(ADD, R9, 1),                     # r9 = position + 1
        bpf.alu64_reg(MOD, R9, R8),                    # r9 = (position + 1) % count
        *_select_position(socks_fd),                   # on error now the kernel hashes
        "pass",
        bpf.mov64_imm(R0, SK_PASS),                    # SK_PASS: never drop a connection
        bpf.exit_insn(),
    ])  # fmt: skip


def _select_position(socks_fd: int) -> list[bpf.Insn]:
    """Select the socket of order[r9] (r6 = ctx, r7 = &state); r9 stays the position."""
    return [
        bpf.alu64_imm(AND, R9, MAX_MEMBERS - 1),       # bound it for the verifier (no-op)
        bpf.mov64_reg(R1, R9),                         # r1 = position
        bpf.alu64_imm(LSH, R1, 2),                     # r1 = position * 4
        bpf.alu64_reg(ADD, R1, R7),                    # r1 = &state + position * 4
        bpf.ldx_mem(W, R1, R1, ORDER_AT),              # r1 = state.order[position]: a slot
        bpf.stx_mem(W, R10, -8, R1),                   # stack[-8] = slot (key of the sockarray)
        bpf.mov64_reg(R1, R6),                         # r1 = ctx
        *bpf.ld_map_fd(R2, socks_fd),                  # r2 = sockarray
        bpf.mov64_reg(R3, R10),                        # r3 = fp
        bpf.alu64_imm(ADD, R3, -8),                    # r3 = &slot
        bpf.mov64_imm(R4, 0),                          # r4 = flags 0
        bpf.call(bpf.FUNC_SK_SELECT_REUSEPORT),        # r0 = 0 or -errno (-ENOENT: empty slot)
    ]  # fmt: skip


def least_conn_pick(loads_fd: int) -> list[bpf.Line]:
    """Position of the least loaded member among min(count, 64) scanned from the round-robin
    start r9 (ties: the first from the start, so ties rotate). The pick's load is bumped at
    once (atomic add) so the SYNs before the supervisor's next set_loads spread out instead
    of herding onto one member."""
    return [
        bpf.stx_mem(DW, R10, -16, R7),                 # stack[-16] = &state (r7 is a temp below)
        bpf.ld_map_fd(R1, loads_fd),                   # r1 = loads map
        bpf.mov64_reg(R2, R10),                        # r2 = fp
        bpf.alu64_imm(ADD, R2, -4),                    # r2 = &key (still 0)
        bpf.call(bpf.FUNC_MAP_LOOKUP_ELEM),            # r0 = &loads or NULL
        bpf.jmp_imm(JEQ, R0, 0, "picked"),             # no loads: keep the round-robin start
        bpf.alu64_imm(AND, R9, MAX_MEMBERS - 1),       # start, bounded (no-op: start < count)
        bpf.mov64_reg(R3, R9),                         # r3 = best position = start
        bpf.mov64_reg(R5, R9),                         # r5 = start
        bpf.alu64_imm(LSH, R5, 2),                     # r5 = start * 4
        bpf.alu64_reg(ADD, R5, R0),                    # r5 = &loads[start]
        bpf.ldx_mem(W, R4, R5, 0),                     # r4 = best load = loads[start]
        bpf.mov64_imm(R1, 1),                          # r1 = i = 1
        "loop",
        bpf.jmp_imm(JGE, R1, LEAST_CONN_SCAN, "done"),  # scanned 64: done
        bpf.jmp_reg(JGE, R1, R8, "done"),              # scanned every member: done
        bpf.mov64_reg(R5, R9),                         # r5 = start
        bpf.alu64_reg(ADD, R5, R1),                    # r5 = start + i
        # The wrap is a modulo, not a compare-and-subtract: a compare would tie the
        # ranges of start, i and count together and the verifier's states would explode.
        bpf.alu64_reg(MOD, R5, R8),                    # r5 = position = (start + i) % count
        bpf.alu64_imm(AND, R5, MAX_MEMBERS - 1),       # bound it for the verifier (no-op)
        bpf.mov64_reg(R7, R5),                         # r7 = position
        bpf.alu64_imm(LSH, R7, 2),                     # r7 = position * 4
        bpf.alu64_reg(ADD, R7, R0),                    # r7 = &loads[position]
        bpf.ldx_mem(W, R7, R7, 0),                     # r7 = loads[position]
        bpf.jmp_reg(JGE, R7, R4, "next"),              # not less loaded: keep the best
        bpf.mov64_reg(R4, R7),                         # best load = this load
        bpf.mov64_reg(R3, R5),                         # best position = this position
        "next",
        bpf.alu64_imm(ADD, R1, 1),                     # i += 1
        bpf.jump("loop"),                              # next member
        "done",
        bpf.mov64_reg(R9, R3),                         # r9 = best position
        bpf.alu64_imm(AND, R9, MAX_MEMBERS - 1),       # bounded
        bpf.mov64_reg(R5, R9),                         # r5 = best position
        bpf.alu64_imm(LSH, R5, 2),                     # r5 = best * 4
        bpf.alu64_reg(ADD, R5, R0),                    # r5 = &loads[best]
        bpf.mov64_imm(R1, 1),                          # r1 = 1
        bpf.atomic_add(W, R5, 0, R1),                  # loads[best] += 1 until the next sample
        "picked",
        bpf.ldx_mem(DW, R7, R10, -16),                 # r7 = &state again
    ]  # fmt: skip
