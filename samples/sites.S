/* sites.S: one hand-written syscall site per rewriter situation, in a program that runs natively.
 *
 * It upper-cases a message read through RIP-relative addressing, writes it to stdout, checks the
 * results of the other syscalls and exits 0 (1 if anything is off). The labels name the sites so
 * tests can find them in the symbol table:
 *
 *   site_before_riprel  strategy "before": the displaced window holds a RIP-relative lea and a
 *                       2-byte mov, so the lea must keep its absolute target in the stub.
 *   site_branch_target  a loop jumps back onto the syscall, so "before" is refused and "after"
 *                       displaces the RIP-relative store that follows it.
 *   site_jmp_after      the syscall is a function entry (a call target) and is followed by a
 *                       jmp rel32, which strategy "after" displaces and re-encodes.
 *   site_exit           strategy "before" whose first displaced instruction is itself a branch
 *                       target (allowed: the jump lands on the new JMP).
 */
    .intel_syntax noprefix
    .globl _start
    .globl site_before_riprel, site_branch_target, site_jmp_after, site_exit

    .text
_start:
    /* Upper-case msg into outbuf: base addresses come from RIP-relative leas. */
    lea rsi, [rip + msg]
    lea rdi, [rip + outbuf]
    mov ecx, dword ptr [rip + msglen]
    xor edx, edx
1:  movzx eax, byte ptr [rsi + rdx]
    lea r8d, [rax - 'a']
    cmp r8d, 25
    ja 2f
    sub eax, 0x20
2:  mov byte ptr [rdi + rdx], al
    inc edx
    cmp edx, ecx
    jne 1b

    /* write(1, outbuf, msglen) */
    mov edi, 1
    mov edx, dword ptr [rip + msglen]
    lea rsi, [rip + outbuf]
    mov eax, edi
site_before_riprel:
    syscall
    cmp rax, rdx
    jne fail

    /* getppid() twice; the loop's back edge lands on the syscall itself. */
    mov ebx, 2
    mov eax, 110
site_branch_target:
    syscall
    mov qword ptr [rip + ppid], rax
    mov eax, 110
    dec ebx
    jnz site_branch_target
    cmp qword ptr [rip + ppid], 0
    jle fail

    /* getpid() through a function whose first instruction is the syscall. */
    mov eax, 39
    call getpid_entry
    cmp qword ptr [rip + pid], 0
    jle fail

    xor edi, edi
exit_with_edi:
    mov eax, 60
site_exit:
    syscall
    ud2

fail:
    mov edi, 1
    jmp exit_with_edi

getpid_entry:
site_jmp_after:
    syscall
    {disp32} jmp getpid_done
    ud2
getpid_done:
    mov qword ptr [rip + pid], rax
    ret

    .section .rodata
msg:
    .ascii "litebox-pack: rip-relative sites ok\n"
msg_end:
msglen:
    .long msg_end - msg

    .bss
    .balign 8
ppid:
    .zero 8
pid:
    .zero 8
outbuf:
    .zero 64

    .section .note.GNU-stack, "", @progbits
