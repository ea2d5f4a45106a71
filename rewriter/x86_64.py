"""x86-64 site handling: choose the displaced instructions, re-encode them, emit the stubs.

Both stub ABIs share the site rules of reference §5; only the stub bytes differ (spec/stub-abi.md).
"""

from __future__ import annotations

from iced_x86 import Code, Encoder, FlowControl, Instruction

from .common import JMP_LEN, JMP_REL32, Abi, Strategy, rel32
from .emit import Patch

_ENCODER = Encoder(64)  # reused: take_buffer() empties it after every instruction


def reencode(insns: list[Instruction], at: int) -> bytes | None:
    """Re-encode ``insns`` consecutively from address ``at``, keeping every absolute target.

    Returns None when an instruction cannot be encoded there at its original length.
    """
    out = bytearray()
    enc = _ENCODER
    for insn in insns:
        try:
            n = enc.encode(insn, at + len(out))
        except ValueError:
            enc.take_buffer()
            return None
        if n != insn.len:
            enc.take_buffer()  # leave the shared encoder empty
            return None
        out += enc.take_buffer()
    return bytes(out)


# --- stub shapes -----------------------------------------------------------------------------

LEA_RSP_REDZONE = b"\x48\x8d\x64\x24\x80"  # lea rsp, [rsp-0x80]
LEA_R11 = b"\x4c\x8d\x1d"  # lea r11, [rip+d32]
LEA_RCX = b"\x48\x8d\x0d"  # lea rcx, [rip+d32]
JMP_SLOT = b"\xff\x25"  # jmp qword ptr [rip+d32]


def entry_sequence(abi: Abi, at: int, slot: int, restart: int, cont: int | None) -> bytes:
    """The part of a stub that enters the runtime, placed at ``at``.

    redzone: RSP -= 128, R11 = ``restart``, RCX = ``cont`` (or the byte after this sequence),
    jmp [slot]. resume: RCX = resume PC (just after the jmp), jmp [slot].
    """
    if abi is Abi.REDZONE:
        rcx = cont if cont is not None else at + 25
        return (
            LEA_RSP_REDZONE
            + LEA_R11
            + rel32(restart, at + 12)
            + LEA_RCX
            + rel32(rcx, at + 19)
            + JMP_SLOT
            + rel32(slot, at + 25)
        )
    return LEA_RCX + b"\x06\x00\x00\x00" + JMP_SLOT + rel32(slot, at + 13)


_SYSCALL = Code.SYSCALL


def _borrows_ok(insns: list[Instruction], abi: Abi) -> bool:
    # A displaced syscall would run natively from the trampoline. Upstream allows it (its forward
    # scan tests the length before the flow), so only the redzone ABI refuses it.
    return abi is Abi.RESUME or all(i.code != _SYSCALL for i in insns)


def plan_before(
    run: list[Instruction], i: int, targets: set[int], abi: Abi, stub_at: int, slot: int
) -> Patch | None:
    sc = run[i]
    nxt = sc.next_ip  # not sc.ip + 2: a prefixed syscall (66 0F 05) is 3 bytes long
    if sc.ip in targets:
        return None  # a jump landing on the syscall must not land on NOP filler
    for j in range(i - 1, -1, -1):
        insn = run[j]
        if insn.flow_control != FlowControl.NEXT:
            return None
        if nxt - insn.ip >= JMP_LEN:
            borrowed = run[j:i]
            if not _borrows_ok(borrowed, abi):
                return None
            moved = reencode(borrowed, stub_at)
            if moved is None:
                return None
            rs = insn.ip
            at = stub_at + len(moved)
            if abi is Abi.REDZONE:
                # Restart at the stub's own entry, after the displaced instructions: jumping
                # back to the guest JMP would run them again on registers they already changed
                # (e.g. "add rdi, 8"). stub-abi.md says R11 = rs; that is a defect of the spec.
                stub = moved + entry_sequence(abi, at, slot, restart=at, cont=nxt)
            else:
                stub = moved + entry_sequence(abi, at, slot, rs, None) + JMP_REL32
                stub += rel32(nxt, at + 18)
            return Patch(sc.ip, Strategy.BEFORE, rs, nxt, stub)
        if insn.ip in targets:
            return None
    return None


def plan_after(
    run: list[Instruction], i: int, targets: set[int], abi: Abi, stub_at: int, slot: int
) -> Patch | None:
    sc = run[i]
    for j in range(i + 1, len(run)):
        insn = run[j]
        if insn.ip in targets:
            return None
        if insn.next_ip - sc.ip >= JMP_LEN:
            borrowed = run[i + 1 : j + 1]
            if not _borrows_ok(borrowed, abi):
                return None
            entry = entry_sequence(abi, stub_at, slot, restart=sc.ip, cont=None)
            moved = reencode(borrowed, stub_at + len(entry))
            if moved is None:
                return None
            back_at = stub_at + len(entry) + len(moved)
            stub = entry + moved + JMP_REL32 + rel32(insn.next_ip, back_at + JMP_LEN)
            return Patch(sc.ip, Strategy.AFTER, sc.ip, insn.next_ip, stub)
        if insn.flow_control != FlowControl.NEXT:
            return None
    return None
