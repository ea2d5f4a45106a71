/* entry.S: the runtime's hand-written edges: process entry, the callback entered from the
 * trampoline stubs, the clone child start, the SIGSYS restorer and the jump into the guest.
 *
 * Everything that runs on the guest's behalf starts here, on the guest's stack, with the guest's
 * FS: nothing in this file touches FS, and the C it calls is freestanding. */
    .intel_syntax noprefix
    .text

/* Process entry: the kernel's initial stack pointer goes to rt_main (loader.c). */
    .globl _start
    .type _start, @function
_start:
    xor ebp, ebp
    mov rdi, rsp
    and rsp, -16
    call rt_main
    ud2

/* The callback. Stubs jump here through the slot with RAX = number, RDI RSI RDX R10 R8 R9 =
 * arguments and RCX = where the guest continues.
 *   resume:  RSP = the guest's RSP, so step below its red zone first (flags untouched by lea).
 *   redzone: the stub already did that; R11 holds the restart address, which is not needed
 *            because the kernel restarts an interrupted syscall inside the callback itself.
 * The frame pushed below is struct regs (rt.h); every register is restored from it except RAX
 * (the result), RCX and R11, exactly what a real syscall leaves. */
    .globl rt_callback_resume
    .type rt_callback_resume, @function
rt_callback_resume:
    lea rsp, [rsp - 128]
    .globl rt_callback_redzone
    .type rt_callback_redzone, @function
rt_callback_redzone:
    pushfq
    cmp rax, 15                 /* rt_sigreturn: the kernel reads the frame at the guest RSP */
    je 9f
    push rcx                    /* regs.rip: the continuation */
    push rax
    push rbx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp                /* struct regs * */
    mov rbx, rsp                /* callee-saved: survives the call */
    and rsp, -16
    cld
    call rt_dispatch
    mov rsp, rbx
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rbx
    pop rax
    pop rcx
    popfq
    lea rsp, [rsp + 128]
    jmp rcx
9:
    lock inc qword ptr [rip + rt_sigreturn_count]
    lea rsp, [rsp + 8 + 128]    /* back to the guest's exact RSP */
    syscall
    ud2

/* i64 rt_clone_raw(nr, a0, a1, a2, a3, a4): clone/clone3 whose child stack pointer points at a
 * struct child_start. The parent returns the result; the child never returns: it optionally
 * clears the counters it inherited (a new process), loads the guest registers from the record,
 * sets RAX = 0, RSP = the guest's new stack pointer and jumps to the guest's continuation. */
    .globl rt_clone_raw
    .type rt_clone_raw, @function
rt_clone_raw:
    mov rax, rdi
    mov rdi, rsi
    mov rsi, rdx
    mov rdx, rcx
    mov r10, r8
    mov r8, r9
    syscall
    test rax, rax
    jz 1f
    ret
1:
    cmp qword ptr [rsp], 0      /* child_start.reset; RSP is 16-aligned here */
    je 2f
    call rt_child_after_fork
2:
    add rsp, 8
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rbx
    pop rax
    xor eax, eax                /* the child's clone result (before popfq: xor sets flags) */
    pop rcx                     /* regs.rip */
    popfq
    pop rsp                     /* child_start.rsp */
    jmp rcx

/* The SIGSYS handler returns through this (SA_RESTORER): it lies in the runtime's text, so the
 * seccomp filter lets its rt_sigreturn through. */
    .globl rt_sigrestorer
    .type rt_sigrestorer, @function
rt_sigrestorer:
    mov eax, 15
    syscall
    ud2

/* void rt_sigreturn_at(u64 rsp): an escaped rt_sigreturn, performed from the runtime's text with
 * the guest's RSP so the kernel finds the guest's signal frame. */
    .globl rt_sigreturn_at
    .type rt_sigreturn_at, @function
rt_sigreturn_at:
    mov rsp, rdi
    mov eax, 15
    syscall
    ud2

/* void rt_enter_guest(u64 entry, u64 sp): start the guest as the kernel would, with a clean
 * register file (RDX = 0: no function for atexit) and RSP at argc. */
    .globl rt_enter_guest
    .type rt_enter_guest, @function
rt_enter_guest:
    mov rsp, rsi
    mov r11, rdi
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    xor r8d, r8d
    xor r9d, r9d
    xor r10d, r10d
    xor r12d, r12d
    xor r13d, r13d
    xor r14d, r14d
    xor r15d, r15d
    jmp r11

    .section .note.GNU-stack, "", @progbits
