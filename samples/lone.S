/* lone.S: exactly one syscall, and it cannot be patched either way.
 *
 * Strategy "before" is refused because the syscall is a branch target (a jump landing on it must
 * not land on NOP filler); strategy "after" is refused because only ud2 follows it, which leaves
 * 4 bytes (syscall + ud2) where a 5-byte jump is needed, and ud2 ends the forward scan.
 * Natively the program runs exit(0) at that syscall, so ud2 is never reached. */
    .intel_syntax noprefix
    .globl _start
    .text
_start:
    xor edi, edi
    mov eax, 60                 /* exit */
    jmp lone_syscall            /* a branch onto the syscall: nothing may be moved in front */
lone_syscall:
    syscall
    ud2

    .section .note.GNU-stack, "", @progbits
